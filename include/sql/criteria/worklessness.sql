-- worklessness (contract section 5): families with a counted member who has
--   as an adult (18+ at R), an out-of-work benefit claim active at R (start <= R, no end or end >= R); or
--   a housing rent_arrears, notice_seeking_possession or eviction in the window; or
--   aged 16-24 at R, a need neet active in the window (start <= R, no end or end > R - lookback).
-- Parameters: night (the run whose links count), reference_date (the date the rules are evaluated at), window_start, reference_yyyymmdd.
SELECT DISTINCT f.family_ref
FROM cur_benefits b
JOIN links k ON k.reference_date = :night AND k.dataset = 'benefits' AND k.record_id = b.record_id
JOIN counted_persons c ON c.person_ref = k.person_ref
JOIN cur_families f ON f.person_ref = c.person_ref
WHERE b.out_of_work = TRUE
  AND b.claim_start <= :reference_date
  AND (b.claim_end IS NULL OR b.claim_end >= :reference_date)
  AND (CAST(:reference_yyyymmdd AS INTEGER) - tfp_yyyymmdd(f.date_of_birth)) / 10000 >= 18
UNION
SELECT DISTINCT f.family_ref
FROM cur_tenancy_events t
JOIN links k ON k.reference_date = :night AND k.dataset = 'tenancy_events' AND k.record_id = t.record_id
JOIN counted_persons c ON c.person_ref = k.person_ref
JOIN cur_families f ON f.person_ref = c.person_ref
WHERE t.event IN ('rent_arrears', 'notice_seeking_possession', 'eviction')
  AND t.event_date > :window_start
  AND t.event_date <= :reference_date
UNION
SELECT DISTINCT f.family_ref
FROM cur_needs n
JOIN counted_persons c ON c.person_ref = n.person_ref
JOIN cur_families f ON f.person_ref = c.person_ref
WHERE n.need = 'neet'
  AND n.start_date <= :reference_date
  AND (n.end_date IS NULL OR n.end_date > :window_start)
  AND (CAST(:reference_yyyymmdd AS INTEGER) - tfp_yyyymmdd(f.date_of_birth)) / 10000 BETWEEN 16 AND 24

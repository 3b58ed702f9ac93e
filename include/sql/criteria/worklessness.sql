-- worklessness (contract sections 5 and 10): families with a counted member who has
--   out_of_work_benefit: as an adult (18+ at R), an out-of-work benefit claim active at R
--                        (start <= R, no end or end >= R); or
--   rent_arrears, notice_seeking_possession, eviction: that housing event in the window, a
--                        rent_arrears event only with arrears_amount >= criteria.min_rent_arrears
--                        (a blank amount counts as 0: it counts only while the minimum is 0); or
--   neet:                aged 16-24 at R, a need neet active in the window (start <= R, no end or end > R - lookback).
-- Returns (family_ref, indicator): one row per family and indicator it meets (tfp.criteria.INDICATORS).
-- Parameters: night (the run whose links count), reference_date (the date the rules are evaluated at), window_start,
-- reference_yyyymmdd, min_rent_arrears.
SELECT DISTINCT f.family_ref, 'out_of_work_benefit' AS indicator
FROM cur_benefits b
JOIN links k ON k.reference_date = :night AND k.dataset = 'benefits' AND k.record_id = b.record_id
JOIN counted_persons c ON c.person_ref = k.person_ref
JOIN cur_families f ON f.person_ref = c.person_ref
WHERE b.out_of_work = TRUE
  AND b.claim_start <= :reference_date
  AND (b.claim_end IS NULL OR b.claim_end >= :reference_date)
  AND (CAST(:reference_yyyymmdd AS INTEGER) - tfp_yyyymmdd(f.date_of_birth)) / 10000 >= 18
UNION
SELECT DISTINCT f.family_ref, t.event AS indicator
FROM cur_tenancy_events t
JOIN links k ON k.reference_date = :night AND k.dataset = 'tenancy_events' AND k.record_id = t.record_id
JOIN counted_persons c ON c.person_ref = k.person_ref
JOIN cur_families f ON f.person_ref = c.person_ref
WHERE t.event IN ('rent_arrears', 'notice_seeking_possession', 'eviction')
  AND (t.event <> 'rent_arrears' OR COALESCE(t.arrears_amount, 0) >= CAST(:min_rent_arrears AS FLOAT))
  AND t.event_date > :window_start
  AND t.event_date <= :reference_date
UNION
SELECT DISTINCT f.family_ref, 'neet' AS indicator
FROM cur_needs n
JOIN counted_persons c ON c.person_ref = n.person_ref
JOIN cur_families f ON f.person_ref = c.person_ref
WHERE n.need = 'neet'
  AND n.start_date <= :reference_date
  AND (n.end_date IS NULL OR n.end_date > :window_start)
  AND (CAST(:reference_yyyymmdd AS INTEGER) - tfp_yyyymmdd(f.date_of_birth)) / 10000 BETWEEN 16 AND 24

-- health (contract section 5): families with a counted member who has a need mental_health or
-- substance_misuse active in the window (start <= R and (no end or end > R - lookback)).
-- Parameters: reference_date (the date the rules are evaluated at), window_start.
SELECT DISTINCT f.family_ref
FROM cur_needs n
JOIN counted_persons c ON c.person_ref = n.person_ref
JOIN cur_families f ON f.person_ref = c.person_ref
WHERE n.need IN ('mental_health', 'substance_misuse')
  AND n.start_date <= :reference_date
  AND (n.end_date IS NULL OR n.end_date > :window_start)

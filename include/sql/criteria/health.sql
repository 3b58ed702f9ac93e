-- health (contract sections 5 and 10): families with a counted member (any age) who has a need
-- mental_health, substance_misuse, vulnerable_new_mother or physical_health active in the window
-- (start <= R and (no end or end > R - lookback)).
-- Returns (family_ref, indicator): the indicator is the need code (tfp.criteria.INDICATORS).
-- Parameters: reference_date (the date the rules are evaluated at), window_start.
SELECT DISTINCT f.family_ref, n.need AS indicator
FROM cur_needs n
JOIN counted_persons c ON c.person_ref = n.person_ref
JOIN cur_families f ON f.person_ref = c.person_ref
WHERE n.need IN ('mental_health', 'substance_misuse', 'vulnerable_new_mother', 'physical_health')
  AND n.start_date <= :reference_date
  AND (n.end_date IS NULL OR n.end_date > :window_start)

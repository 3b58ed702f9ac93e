-- children_need_help (contract sections 5 and 10): families with a counted child (under 18 at R) with
-- a need child_in_need, child_protection_plan, early_help, young_carer, section_47,
-- child_sexual_exploitation, missing_from_home or emotional_wellbeing active in the window
-- (start <= R and (no end or end > R - lookback)). Needs carry the roster's person_ref directly.
-- Returns (family_ref, indicator): the indicator is the need code (tfp.criteria.INDICATORS).
-- Parameters: reference_date (the date the rules are evaluated at), window_start, reference_yyyymmdd.
SELECT DISTINCT f.family_ref, n.need AS indicator
FROM cur_needs n
JOIN counted_persons c ON c.person_ref = n.person_ref
JOIN cur_families f ON f.person_ref = c.person_ref
WHERE n.need IN ('child_in_need', 'child_protection_plan', 'early_help', 'young_carer', 'section_47',
                 'child_sexual_exploitation', 'missing_from_home', 'emotional_wellbeing')
  AND n.start_date <= :reference_date
  AND (n.end_date IS NULL OR n.end_date > :window_start)
  AND (CAST(:reference_yyyymmdd AS INTEGER) - tfp_yyyymmdd(f.date_of_birth)) / 10000 < 18

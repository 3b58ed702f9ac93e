-- school_attendance (contract sections 5 and 10): families with a counted child (under 18 at R) who,
-- over the last three terms that ended on or before R (summed over those of them the child has rows for),
--   persistent_absence: missed at least the persistent-absence rate of possible sessions; or
--   fixed_term_exclusions: had at least the threshold of fixed-term exclusions; or
--   exclusion_or_alternative_provision: had any permanent exclusion or alternative provision;
-- or who has
--   child_missing_education: a need child_missing_education active in the window
--   (start <= R and (no end or end > R - lookback)).
-- The rate is passed as an exact fraction rate_numerator / rate_denominator so that the boundary
-- (e.g. 3 of 30 at 0.10) compares in integers, free of floating-point rounding; no possible
-- sessions means no absence rate.
-- Returns (family_ref, indicator): one row per family and indicator it meets (tfp.criteria.INDICATORS).
-- Parameters: night (the run whose links count), reference_date (the date the rules are evaluated at), reference_yyyymmdd,
-- window_start, term_1, term_2, term_3, rate_numerator, rate_denominator, fixed_term_exclusions.
WITH terms AS (
    SELECT f.family_ref,
           f.person_ref,
           SUM(s.sessions_possible) AS possible,
           SUM(s.sessions_missed) AS missed,
           SUM(COALESCE(s.fixed_term_exclusions, 0)) AS exclusions,
           SUM(CASE WHEN s.permanent_exclusion = TRUE OR s.alternative_provision = TRUE
                    THEN 1 ELSE 0 END) AS excluded_or_ap
    FROM cur_attendance s
    JOIN links k ON k.reference_date = :night AND k.dataset = 'attendance' AND k.record_id = s.record_id
    JOIN counted_persons c ON c.person_ref = k.person_ref
    JOIN cur_families f ON f.person_ref = c.person_ref
    WHERE s.term IN (:term_1, :term_2, :term_3)
      AND (CAST(:reference_yyyymmdd AS INTEGER) - tfp_yyyymmdd(f.date_of_birth)) / 10000 < 18
    GROUP BY f.family_ref, f.person_ref
)
SELECT DISTINCT a.family_ref, 'persistent_absence' AS indicator
FROM terms a
WHERE a.possible > 0 AND a.missed * CAST(:rate_denominator AS BIGINT) >= a.possible * CAST(:rate_numerator AS BIGINT)
UNION
SELECT DISTINCT a.family_ref, 'fixed_term_exclusions' AS indicator
FROM terms a
WHERE a.exclusions >= :fixed_term_exclusions
UNION
SELECT DISTINCT a.family_ref, 'exclusion_or_alternative_provision' AS indicator
FROM terms a
WHERE a.excluded_or_ap > 0
UNION
SELECT DISTINCT f.family_ref, 'child_missing_education' AS indicator
FROM cur_needs n
JOIN counted_persons c ON c.person_ref = n.person_ref
JOIN cur_families f ON f.person_ref = c.person_ref
WHERE n.need = 'child_missing_education'
  AND n.start_date <= :reference_date
  AND (n.end_date IS NULL OR n.end_date > :window_start)
  AND (CAST(:reference_yyyymmdd AS INTEGER) - tfp_yyyymmdd(f.date_of_birth)) / 10000 < 18

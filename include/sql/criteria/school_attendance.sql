-- school_attendance (contract section 5): families with a counted child (under 18 at R) who, over
-- the last three terms that ended on or before R (summed over those of them the child has rows for),
-- missed at least the persistent-absence rate of possible sessions, or had at least the threshold
-- of fixed-term exclusions, or any permanent exclusion or alternative provision.
-- The rate is passed as an exact fraction rate_numerator / rate_denominator so that the boundary
-- (e.g. 3 of 30 at 0.10) compares in integers, free of floating-point rounding; no possible
-- sessions means no absence rate.
-- Parameters: night (the run whose links count), reference_date (the date the rules are evaluated at), reference_yyyymmdd, term_1, term_2, term_3, rate_numerator,
-- rate_denominator, fixed_term_exclusions.
SELECT DISTINCT a.family_ref
FROM (
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
) a
WHERE (a.possible > 0 AND a.missed * CAST(:rate_denominator AS BIGINT) >= a.possible * CAST(:rate_numerator AS BIGINT))
   OR a.exclusions >= :fixed_term_exclusions
   OR a.excluded_or_ap > 0

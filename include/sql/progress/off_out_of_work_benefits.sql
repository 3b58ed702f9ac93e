-- off_out_of_work_benefits (contract section 10, the progress file): families with a counted member who,
--   as an adult (18+) at the family's baseline date, had an out-of-work claim active at it
--   (start <= baseline, no end or end >= baseline), and has had no out-of-work claim active in the last
--   off_benefits_weeks weeks up to R, (R - weeks, R]: none with start <= R and (no end or end > off_since).
-- progress_members holds each counted member of a family in the file with the family's baseline_date.
-- Parameters: night (the run whose links count), reference_date (R), off_since (R - off_benefits_weeks weeks).
SELECT DISTINCT m.family_ref
FROM progress_members m
JOIN cur_families f ON f.person_ref = m.person_ref
JOIN links k ON k.reference_date = :night AND k.dataset = 'benefits' AND k.person_ref = m.person_ref
JOIN cur_benefits b ON b.record_id = k.record_id
WHERE b.out_of_work = TRUE
  AND b.claim_start <= m.baseline_date
  AND (b.claim_end IS NULL OR b.claim_end >= m.baseline_date)
  AND (tfp_yyyymmdd(m.baseline_date) - tfp_yyyymmdd(f.date_of_birth)) / 10000 >= 18
  -- not correlated, so it runs once: a NOT EXISTS per link scanned every benefits link again (links has
  -- no index on person_ref), hours on a 50,000-family borough. person_ref IS NOT NULL keeps NOT IN exact.
  AND m.person_ref NOT IN (
        SELECT k2.person_ref
        FROM links k2
        JOIN cur_benefits b2 ON b2.record_id = k2.record_id
        WHERE k2.reference_date = :night AND k2.dataset = 'benefits' AND k2.person_ref IS NOT NULL
          AND b2.out_of_work = TRUE
          AND b2.claim_start <= :reference_date
          AND (b2.claim_end IS NULL OR b2.claim_end > :off_since)
  )

-- support_services (contract section 10, not a criterion): the families with a kept member linked to a
-- support_services attendance active in the window (start <= R and (no end or end > R - lookback)),
-- with the family's programme status, attached date and the earliest start of those attendances.
-- Returns (family_ref, programme_status, attached_date, first_start). Parameters: night (the run whose links
-- and consent count), reference_date, window_start.
SELECT f.family_ref, MIN(f.programme_status) AS programme_status, MIN(f.attached_date) AS attached_date,
       MIN(s.start_date) AS first_start
FROM cur_support_attendance s
JOIN links k ON k.reference_date = :night AND k.dataset = 'support_attendance' AND k.record_id = s.record_id
JOIN person_consent pc ON pc.reference_date = :night AND pc.person_ref = k.person_ref AND pc.kept = TRUE
JOIN cur_families f ON f.person_ref = k.person_ref
WHERE s.start_date <= :reference_date
  AND (s.end_date IS NULL OR s.end_date > :window_start)
  AND f.programme_status IS NOT NULL
GROUP BY f.family_ref

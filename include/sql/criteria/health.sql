-- health (contract sections 5 and 10): families with a counted member (any age) who has
--   <need code>:           a need mental_health, substance_misuse, vulnerable_new_mother or physical_health
--                          active in the window (start <= R and (no end or end > R - lookback));
--   treatment_episode:     a substance-misuse treatment episode (health feed) active in the window, with
--                          episode_start and episode_end as its start and end;
--   mental_health_contact: a mental-health service contact (health feed) active in the window, with
--                          referral_date and discharge_date as its start and end.
-- The health feed's records count through the night's links; without a health source their tables are empty.
-- Returns (family_ref, indicator): the indicator is the need code or the feed's (tfp.criteria.INDICATORS).
-- Parameters: night (the run whose links count), reference_date (the date the rules are evaluated at), window_start.
SELECT DISTINCT f.family_ref, n.need AS indicator
FROM cur_needs n
JOIN counted_persons c ON c.person_ref = n.person_ref
JOIN cur_families f ON f.person_ref = c.person_ref
WHERE n.need IN ('mental_health', 'substance_misuse', 'vulnerable_new_mother', 'physical_health')
  AND n.start_date <= :reference_date
  AND (n.end_date IS NULL OR n.end_date > :window_start)
UNION
SELECT DISTINCT f.family_ref, 'treatment_episode' AS indicator
FROM cur_treatment_episodes t
JOIN links k ON k.reference_date = :night AND k.dataset = 'treatment_episodes' AND k.record_id = t.record_id
JOIN counted_persons c ON c.person_ref = k.person_ref
JOIN cur_families f ON f.person_ref = c.person_ref
WHERE t.episode_start <= :reference_date
  AND (t.episode_end IS NULL OR t.episode_end > :window_start)
UNION
SELECT DISTINCT f.family_ref, 'mental_health_contact' AS indicator
FROM cur_mental_health_contacts m
JOIN links k ON k.reference_date = :night AND k.dataset = 'mental_health_contacts' AND k.record_id = m.record_id
JOIN counted_persons c ON c.person_ref = k.person_ref
JOIN cur_families f ON f.person_ref = c.person_ref
WHERE m.referral_date <= :reference_date
  AND (m.discharge_date IS NULL OR m.discharge_date > :window_start)

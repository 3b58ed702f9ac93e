-- crime_asb (contract sections 5 and 10): families with a counted member who has
--   youth_offence: a proven offence as offender, aged 10-17 on the incident date, in the window; or
--   asb_incident:  an asb incident in the window with role offender, suspect, perpetrator or subject
--                  (never victim, section 10; an unknown role does not count); or
--   housing_asb:   a housing asb_warning or asb_injunction in the window; or
--   adult_order:   as an adult (18+ at R) with parenting responsibility, a licence, community order or
--                  suspended sentence active at R, or a custody with its release date in (R, R + 12 months].
-- A release on R itself does not count: "within 12 months after R" starts the day after R.
-- Returns (family_ref, indicator): one row per family and indicator it meets (tfp.criteria.INDICATORS).
-- Parameters: night (the run whose links count), reference_date (the date the rules are evaluated at), window_start, release_window_end, reference_yyyymmdd.
SELECT DISTINCT f.family_ref,
       CASE WHEN i.category = 'asb' THEN 'asb_incident' ELSE 'youth_offence' END AS indicator
FROM cur_incidents i
JOIN links k ON k.reference_date = :night AND k.dataset = 'incidents' AND k.record_id = i.record_id
JOIN counted_persons c ON c.person_ref = k.person_ref
JOIN cur_families f ON f.person_ref = c.person_ref
WHERE i.incident_date > :window_start
  AND i.incident_date <= :reference_date
  AND (
        (i.category = 'asb' AND i.role IN ('offender', 'suspect', 'perpetrator', 'subject'))
     OR (i.category = 'offence' AND i.proven = TRUE AND i.role = 'offender'
         AND (tfp_yyyymmdd(i.incident_date) - tfp_yyyymmdd(f.date_of_birth)) / 10000 BETWEEN 10 AND 17)
  )
UNION
SELECT DISTINCT f.family_ref, 'housing_asb' AS indicator
FROM cur_tenancy_events t
JOIN links k ON k.reference_date = :night AND k.dataset = 'tenancy_events' AND k.record_id = t.record_id
JOIN counted_persons c ON c.person_ref = k.person_ref
JOIN cur_families f ON f.person_ref = c.person_ref
WHERE t.event IN ('asb_warning', 'asb_injunction')
  AND t.event_date > :window_start
  AND t.event_date <= :reference_date
UNION
SELECT DISTINCT f.family_ref, 'adult_order' AS indicator
FROM cur_cases p
JOIN links k ON k.reference_date = :night AND k.dataset = 'cases' AND k.record_id = p.record_id
JOIN counted_persons c ON c.person_ref = k.person_ref
JOIN cur_families f ON f.person_ref = c.person_ref
WHERE (CAST(:reference_yyyymmdd AS INTEGER) - tfp_yyyymmdd(f.date_of_birth)) / 10000 >= 18
  AND p.parenting_responsibility = TRUE
  AND p.start_date <= :reference_date
  AND (
        (p.order_type IN ('licence', 'community_order', 'suspended_sentence')
         AND (p.end_date IS NULL OR p.end_date >= :reference_date))
     OR (p.order_type = 'custody'
         AND p.release_date > :reference_date
         AND p.release_date <= :release_window_end)
  )

-- domestic_abuse (contract section 5): families with a counted member who has
--   domestic_abuse_incident: an incident in the window with category domestic_abuse (any role); or
--   domestic_abuse_need:     a need domestic_abuse active in the window.
-- Returns (family_ref, indicator): one row per family and indicator it meets (tfp.criteria.INDICATORS).
-- Parameters: night (the run whose links count), reference_date (the date the rules are evaluated at), window_start.
SELECT DISTINCT f.family_ref, 'domestic_abuse_incident' AS indicator
FROM cur_incidents i
JOIN links k ON k.reference_date = :night AND k.dataset = 'incidents' AND k.record_id = i.record_id
JOIN counted_persons c ON c.person_ref = k.person_ref
JOIN cur_families f ON f.person_ref = c.person_ref
WHERE i.category = 'domestic_abuse'
  AND i.incident_date > :window_start
  AND i.incident_date <= :reference_date
UNION
SELECT DISTINCT f.family_ref, 'domestic_abuse_need' AS indicator
FROM cur_needs n
JOIN counted_persons c ON c.person_ref = n.person_ref
JOIN cur_families f ON f.person_ref = c.person_ref
WHERE n.need = 'domestic_abuse'
  AND n.start_date <= :reference_date
  AND (n.end_date IS NULL OR n.end_date > :window_start)

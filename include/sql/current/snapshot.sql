-- The roster as of :reference_date: only the newest staged `families` file dated on or before it counts.
SELECT s.*
FROM stg_families s
WHERE s.landing_id = (
    SELECT l.id
    FROM landing_log l
    WHERE l.dataset = 'families'
      AND l.status = 'staged'
      AND l.file_date <= :reference_date
    ORDER BY l.file_date DESC, l.id DESC
    LIMIT 1
)

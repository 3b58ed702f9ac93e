-- A cumulative dataset as of :reference_date: every staged file dated on or before it adds up, and a
-- record_id seen in several files takes its row from the newest file (latest landing on a tie).
SELECT t.*
FROM (
    SELECT s.*,
           ROW_NUMBER() OVER (PARTITION BY s.record_id ORDER BY s.file_date DESC, s.landing_id DESC) AS newest
    FROM {table} s
    JOIN landing_log l ON l.id = s.landing_id
    WHERE l.status = 'staged'
      AND s.file_date <= :reference_date
) t
WHERE t.newest = 1

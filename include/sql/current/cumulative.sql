-- A cumulative dataset as of :reference_date: every staged file dated on or before it adds up, and a
-- record_id seen in several files of one partner takes its row from that partner's newest file (latest
-- landing on a tie). A record_id is unique per partner: a partner other than the source's own (the short
-- form) has its record_id read as `<partner>:<record_id>`, so two partners' records never meet.
SELECT t.*
FROM (
    SELECT {columns},
           ROW_NUMBER() OVER (PARTITION BY l.partner, s.record_id ORDER BY s.file_date DESC, s.landing_id DESC) AS newest
    FROM {table} s
    JOIN landing_log l ON l.id = s.landing_id
    WHERE l.status = 'staged'
      AND s.file_date <= :reference_date
) t
WHERE t.newest = 1

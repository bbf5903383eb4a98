-- Failed share of provider calls per provider and model over the last hour, from the app
-- database (PostgreSQL). Every call is in raw_calls, success or not, so this is exact.
--   psql -d study -f deploy/monitoring/failure_rate.sql
SELECT
    provider,
    model,
    count(*) AS calls,
    count(*) FILTER (WHERE status <> 'success') AS not_successful,
    round(avg((status <> 'success')::int), 3) AS failure_rate
FROM raw_calls
WHERE created_at > now() - interval '1 hour'
GROUP BY provider, model
ORDER BY failure_rate DESC, calls DESC;

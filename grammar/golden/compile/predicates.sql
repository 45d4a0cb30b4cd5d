-- canonical form
-- Predicates are DuckDB scalar expressions.
MIX 3 AS c_like WHERE language IN ('c', 'python') AND origin LIKE 'Include/%',
    2 AS json WHERE origin ILIKE '%JSON%' OR REGEXP_MATCHES(origin, 'pathlib|glob'),
    1 AS cjk WHERE language IN ('ja', 'zh', 'ko') AND NOT (domain = 'messages' OR n_lines > 40),
    1.5 AS long_ref WHERE (n_bytes / n_lines) * 2 > 80 AND LENGTH(tags) >= 3 AND quality > 0.4
FROM corpus
CHUNK SIZE 75;

-- c_like: dataset corpus, weight 3 (share 2/5), 339 samples, takes 80 (0.236 epochs, max 1)
SELECT * FROM "corpus" WHERE (language IN ('c', 'python') AND origin LIKE 'Include/%');
-- json: dataset corpus, weight 2 (share 4/15), 53 samples, takes 53 (1.000 epochs, max 1)
SELECT * FROM "corpus" WHERE (origin ILIKE '%JSON%' OR REGEXP_MATCHES(origin, 'pathlib|glob')) AND (language IN ('c', 'python') AND origin LIKE 'Include/%') IS NOT TRUE;
-- cjk: dataset corpus, weight 1 (share 2/15), 249 samples, takes 27 (0.108 epochs, max 1)
SELECT * FROM "corpus" WHERE (language IN ('ja', 'zh', 'ko') AND NOT (domain = 'messages' OR n_lines > 40)) AND (language IN ('c', 'python') AND origin LIKE 'Include/%') IS NOT TRUE AND (origin ILIKE '%JSON%' OR REGEXP_MATCHES(origin, 'pathlib|glob')) IS NOT TRUE;
-- long_ref: dataset corpus, weight 1.5 (share 1/5), 104 samples, takes 40 (0.385 epochs, max 1)
SELECT * FROM "corpus" WHERE ((n_bytes / n_lines) * 2 > 80 AND LENGTH(tags) >= 3 AND quality > 0.4) AND (language IN ('c', 'python') AND origin LIKE 'Include/%') IS NOT TRUE AND (origin ILIKE '%JSON%' OR REGEXP_MATCHES(origin, 'pathlib|glob')) IS NOT TRUE AND (language IN ('ja', 'zh', 'ko') AND NOT (domain = 'messages' OR n_lines > 40)) IS NOT TRUE;
-- stream: 200 samples in 1 partitions of 75-sample chunks, ended by json (no LIMIT, ON EXHAUSTION STOP)
-- overlap: 12 samples of long_ref belong to c_like
-- overlap: 1 samples of long_ref belong to json

-- canonical form
MIX 1 AS modules WHERE LENGTH(LIST_FILTER(tags, LAMBDA t : t LIKE 'module:%')) = 1 AND ARRAY_CONTAINS(tags, 'function'),
    1 AS usage WHERE tags && ['usage', 'howto'] AND language <> 'en'
FROM corpus_jsonl
CHUNK SIZE 32;

-- modules: dataset corpus_jsonl, weight 1 (share 1/2), 516 samples, takes 516 (1.000 epochs, max 1)
SELECT * FROM "corpus_jsonl" WHERE (LENGTH(LIST_FILTER(tags, LAMBDA t : t LIKE 'module:%')) = 1 AND ARRAY_CONTAINS(tags, 'function'));
-- usage: dataset corpus_jsonl, weight 1 (share 1/2), 1322 samples, takes 516 (0.390 epochs, max 1)
SELECT * FROM "corpus_jsonl" WHERE (tags && ['usage', 'howto'] AND language <> 'en') AND (LENGTH(LIST_FILTER(tags, LAMBDA t : t LIKE 'module:%')) = 1 AND ARRAY_CONTAINS(tags, 'function')) IS NOT TRUE;
-- stream: 1032 samples in 1 partitions of 32-sample chunks, ended by modules (no LIMIT, ON EXHAUSTION STOP)
-- overlap: 12 samples of usage belong to modules

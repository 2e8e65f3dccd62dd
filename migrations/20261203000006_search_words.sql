-- Typo tolerance from a lexicon instead of from the documents. Matching the query against every
-- document's whole text with trigrams (`q <% body`) rechecked each candidate's full body, tens of
-- kilobytes of prompts: 40 such documents took 320 ms per query (benchmark S5), and it grows with
-- the org. Now each org's distinct words are kept once here; a query word is corrected to the
-- words it resembles (the nearest by trigram distance, a GiST index walk that stops after a
-- few: 7 ms where a GIN lookup rechecked 11k look-alike words in 90 ms), and the corrected
-- query runs against the full-text index like any other. The PostgreSQL docs' pg_trgm chapter
-- suggests the same ("Text Search Integration").
CREATE TABLE search_words (
    org_id uuid NOT NULL REFERENCES orgs (id),
    word   text NOT NULL,
    PRIMARY KEY (org_id, word)
);
CREATE INDEX search_words_trgm ON search_words USING gist (word gist_trgm_ops);

INSERT INTO search_words (org_id, word)
SELECT DISTINCT d.org_id, w.lexeme
  FROM search_documents d, unnest(d.tsv) w
 WHERE length(w.lexeme) BETWEEN 3 AND 64
ON CONFLICT DO NOTHING;

DROP INDEX search_documents_trgm;
ALTER TABLE search_documents DROP COLUMN body;

-- OR and AND over a set of queries (the corrections of one word; the words of a query).
CREATE AGGREGATE crewkit_tsquery_or (tsquery) (SFUNC = tsquery_or, STYPE = tsquery);
CREATE AGGREGATE crewkit_tsquery_and (tsquery) (SFUNC = tsquery_and, STYPE = tsquery);

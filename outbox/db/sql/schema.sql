-- What `outbox migrate` runs to give the database the schema's current truth
-- (outbox/db/schema/*.sql: every function, view and trigger) and the channels
-- this installation knows (outbox.channels), and what a revision's downgrade
-- runs to restore an older set (outbox/db/schema.py).
--
-- Each statement stands under a `-- name --` line and a one-line description of what
-- it does and which parameters it takes; code refers to it by name
-- (outbox.db.queries.QUERIES). Values are always bound parameters.

-- schema_digest --
-- The digest of the schema files last applied (NULL: none, or a revision's frozen set).
SELECT digest FROM outbox.schema_files;

-- schema_digest_set --
-- Record the digest of the schema files just applied: $1 digest.
UPDATE outbox.schema_files SET digest = $1, applied_at = now();

-- schema_digest_forget --
-- After a downgrade restored an older set: no digest, so the next upgrade to head applies the files again (the table
-- exists from revision 0004 on).
DO $$
BEGIN
    IF to_regclass('outbox.schema_files') IS NOT NULL THEN
        UPDATE outbox.schema_files SET digest = NULL, applied_at = now();
    END IF;
END
$$;

-- schema_keep_privileges --
-- Before the functions and views are dropped: who may use each, kept until schema_grant_again has granted it again.
CREATE TEMPORARY TABLE outbox_kept_privileges AS
SELECT 'FUNCTION' AS kind, p.oid::regprocedure::text AS object, p.proacl AS acl
  FROM pg_proc AS p
 WHERE p.pronamespace = 'outbox'::regnamespace AND p.proacl IS NOT NULL
UNION ALL
SELECT 'TABLE', c.oid::regclass::text, c.relacl
  FROM pg_class AS c
 WHERE c.relnamespace = 'outbox'::regnamespace AND c.relkind = 'v' AND c.relacl IS NOT NULL;

-- schema_drop --
-- Drop every view, function and trigger of the outbox schema (triggers go with their functions); tables stay.
-- Objects that belong to an extension are left alone. Names are read as text first: a view dropped along with another
-- (CASCADE) would print as a bare number through regclass.
DO $$
DECLARE
    o record;
BEGIN
    FOR o IN SELECT c.oid::regclass::text AS name FROM pg_class AS c
              WHERE c.relnamespace = 'outbox'::regnamespace AND c.relkind = 'v'
                AND NOT EXISTS (SELECT 1 FROM pg_depend AS d
                                 WHERE d.objid = c.oid AND d.deptype = 'e') LOOP
        EXECUTE format('DROP VIEW IF EXISTS %s CASCADE', o.name);
    END LOOP;
    FOR o IN SELECT p.oid::regprocedure::text AS name FROM pg_proc AS p
              WHERE p.pronamespace = 'outbox'::regnamespace
                AND NOT EXISTS (SELECT 1 FROM pg_depend AS d
                                 WHERE d.objid = p.oid AND d.deptype = 'e') LOOP
        EXECUTE format('DROP FUNCTION IF EXISTS %s CASCADE', o.name);
    END LOOP;
END
$$;

-- schema_grant_again --
-- After the functions and views were created again: the privileges kept by schema_keep_privileges, on each object that
-- exists again under the same name and arguments, exactly (PUBLIC's default EXECUTE is revoked where it had been). A
-- function that gained trailing arguments (optional ones: every existing call still works, as when outbox.enqueue()
-- took traceparent and tracestate) keeps its privileges under its new arguments.
DO $$
DECLARE
    k record;
    a record;
BEGIN
    FOR k IN SELECT * FROM outbox_kept_privileges LOOP
        IF k.kind = 'FUNCTION' AND to_regprocedure(k.object) IS NULL THEN
            SELECT p.oid::regprocedure::text INTO k.object
              FROM pg_proc AS p
             WHERE p.pronamespace = 'outbox'::regnamespace
               AND starts_with(p.oid::regprocedure::text, rtrim(k.object, ')') || ',')
             ORDER BY p.pronargs
             LIMIT 1;
        END IF;
        CONTINUE WHEN (k.kind = 'FUNCTION' AND (k.object IS NULL OR to_regprocedure(k.object) IS NULL))
                   OR (k.kind = 'TABLE' AND to_regclass(k.object) IS NULL);
        EXECUTE format('REVOKE ALL ON %s %s FROM PUBLIC', k.kind, k.object);
        FOR a IN SELECT x.grantee, x.privilege_type, x.is_grantable
                   FROM aclexplode(k.acl) AS x
                  WHERE x.grantee <> x.grantor LOOP
            EXECUTE format('GRANT %s ON %s %s TO %s%s', a.privilege_type, k.kind, k.object,
                           CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
                           CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
        END LOOP;
    END LOOP;
    DROP TABLE outbox_kept_privileges;
END
$$;

-- channels_upsert --
-- Write the channels this installation knows into outbox.channels: $1 a JSON array of their rows (see
-- outbox.deliver.channels.spec.ChannelSpec.catalog_row). Rows of channels not given stay (endpoints may use them).
INSERT INTO outbox.channels AS c
    (name, summary, default_key, payload_check, group_keys, riders, url_pattern, url_required, settings)
SELECT r.name, r.summary, r.default_key, r.payload_check, r.group_keys, r.riders, r.url_pattern, r.url_required,
       coalesce(r.settings, '{}')
  FROM jsonb_to_recordset($1::text::jsonb)
       AS r(name text, summary text, default_key text, payload_check text, group_keys text, riders text,
            url_pattern text, url_required boolean, settings jsonb)
ON CONFLICT (name) DO UPDATE
   SET summary = excluded.summary, default_key = excluded.default_key, payload_check = excluded.payload_check,
       group_keys = excluded.group_keys, riders = excluded.riders, url_pattern = excluded.url_pattern,
       url_required = excluded.url_required, settings = excluded.settings
 WHERE (c.summary, c.default_key, c.payload_check, c.group_keys, c.riders, c.url_pattern, c.url_required,
        c.settings)
       IS DISTINCT FROM (excluded.summary, excluded.default_key, excluded.payload_check, excluded.group_keys,
                         excluded.riders, excluded.url_pattern, excluded.url_required, excluded.settings);

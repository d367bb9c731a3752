//! Schema migrations, applied in order; each runs in one transaction with the bump of
//! `user_version`. Never edit a step that has shipped: add a new one.

use rusqlite::Connection;

use super::error::CatalogError;

const STEPS: &[&str] = &[
    // 1: the chunk index (chunk id → pack, offset, lengths).
    "CREATE TABLE packs (
         rowid INTEGER PRIMARY KEY,
         id BLOB NOT NULL UNIQUE
     );
     CREATE TABLE chunks (
         id BLOB PRIMARY KEY,
         pack INTEGER NOT NULL REFERENCES packs(rowid) ON DELETE CASCADE,
         kind INTEGER NOT NULL,
         offset INTEGER NOT NULL,
         length INTEGER NOT NULL,
         raw_length INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE INDEX chunks_by_pack ON chunks(pack);",
    // 2: the daemon's state: environments, backups and their parts, jobs, activity.
    "CREATE TABLE environments (
         name TEXT PRIMARY KEY,
         status TEXT NOT NULL DEFAULT 'ready',
         last_error TEXT
     );
     CREATE TABLE backups (
         rowid INTEGER PRIMARY KEY,
         env TEXT NOT NULL,
         name TEXT NOT NULL,
         host TEXT NOT NULL,
         manifest TEXT,
         status TEXT NOT NULL,
         version TEXT NOT NULL DEFAULT '',
         trigger TEXT NOT NULL,
         user TEXT NOT NULL,
         created TEXT NOT NULL,
         completed TEXT,
         expires TEXT,
         job INTEGER,
         UNIQUE (env, name)
     );
     CREATE INDEX backups_by_env ON backups(env, created);
     CREATE TABLE parts (
         backup INTEGER NOT NULL REFERENCES backups(rowid) ON DELETE CASCADE,
         part TEXT NOT NULL,
         size INTEGER NOT NULL,
         stored INTEGER NOT NULL,
         PRIMARY KEY (backup, part)
     );
     CREATE TABLE jobs (
         id INTEGER PRIMARY KEY,
         kind TEXT NOT NULL,
         env TEXT,
         state TEXT NOT NULL,
         user TEXT NOT NULL,
         backup TEXT,
         error TEXT,
         created TEXT NOT NULL,
         started TEXT,
         finished TEXT
     );
     CREATE INDEX jobs_by_state ON jobs(state, id);
     CREATE TABLE activity (
         id INTEGER PRIMARY KEY,
         time TEXT NOT NULL,
         user TEXT NOT NULL,
         env TEXT,
         action TEXT NOT NULL,
         backup TEXT,
         outcome TEXT NOT NULL,
         detail TEXT
     );
     CREATE INDEX activity_by_env ON activity(env, id);",
    // 3: restores: a job's arguments, and the safety backup an environment can be
    // rolled back to.
    "ALTER TABLE jobs ADD COLUMN args TEXT;
     ALTER TABLE environments ADD COLUMN safety_backup TEXT;",
    // 4: schedules: when each (environment, cron expression) last ran.
    "CREATE TABLE schedule_runs (
         env TEXT NOT NULL,
         schedule TEXT NOT NULL,
         last_run TEXT NOT NULL,
         PRIMARY KEY (env, schedule)
     );",
    // 5: temporary links: export objects in the store and when they are deleted.
    "CREATE TABLE exports (
         key TEXT PRIMARY KEY,
         expires TEXT NOT NULL
     );",
    // 6: restore drills: one row per finished drill, with its whole report (also in
    // the store, from where `catalog rebuild` brings it back).
    "CREATE TABLE drills (
         id INTEGER NOT NULL,
         host TEXT NOT NULL,
         env TEXT NOT NULL,
         backup TEXT NOT NULL,
         started TEXT NOT NULL,
         finished TEXT NOT NULL,
         outcome TEXT NOT NULL,
         error TEXT,
         warnings INTEGER NOT NULL DEFAULT 0,
         report TEXT NOT NULL,
         PRIMARY KEY (host, id)
     );
     CREATE INDEX drills_by_env ON drills(env, finished);",
    // 7: whether a running restore has begun changing its environment (the app
    // stopped), so a restart knows if there is anything to repair.
    "ALTER TABLE environments ADD COLUMN changing INTEGER NOT NULL DEFAULT 0;",
    // 8: the fleet's stale hosts (env '') and environments this daemon has alarmed
    // about, so a restart neither repeats an `on_stale` hook nor misses `on_recovered`.
    "CREATE TABLE fleet_alarms (
         host TEXT NOT NULL,
         env TEXT NOT NULL,
         since TEXT NOT NULL,
         reason TEXT NOT NULL,
         PRIMARY KEY (host, env)
     );",
    // 9: whether the store may hold data that no backup references and that only
    // prune's mark finds (backups were deleted, a write failed after its index
    // object, a crash interrupted a job): one row while it may. An existing catalog
    // starts with it, as nothing says its store is clean.
    "CREATE TABLE sweep_owed (
         id INTEGER PRIMARY KEY CHECK (id = 1),
         since TEXT NOT NULL
     );
     INSERT INTO sweep_owed VALUES (1, strftime('%Y-%m-%dT%H:%M:%SZ', 'now'));",
    // 10: Object Lock (`store.lock`): until when each object is locked, as far as
    // this daemon knows. `shared` objects (packs, index objects, the repository
    // config) are lengthened by every backup; the others (manifests, drill
    // reports) keep their own backup's date.
    "CREATE TABLE object_locks (
         key TEXT PRIMARY KEY,
         until TEXT NOT NULL,
         shared INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE INDEX object_locks_by_until ON object_locks(shared, until);",
];

pub fn migrate(conn: &mut Connection, name: &str) -> Result<(), CatalogError> {
    let known = STEPS.len() as i64;
    let current: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if current > known {
        return Err(CatalogError::TooNew {
            path: name.to_owned(),
            found: current,
            known,
        });
    }
    for (index, step) in STEPS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

//! The PostgreSQL side of [`Admin`](crate::db::Admin): synchronous, for the command line
//! and test seeding. It keeps one connection, driven by a runtime of its own; each
//! command runs on a short-lived thread of its own, so that it may be called from code
//! that already runs on a runtime (a test) without blocking that runtime's tasks from
//! inside one of them.

use std::path::Path;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};

use super::{
    Durability, Entity, Error, PostgresUrl, Result, connection_config, delete_user, end_sessions,
    find_user, insert_chat, insert_session, schema, tls, user_from_row,
};
use crate::db::{Compacted, DeletedUser, PrefixMatch, SessionInfo};
use crate::domain::{Timestamp, User};

/// How long a command waits for the database or a lock.
pub(super) const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A connection for one-off administrative changes.
pub(crate) struct Admin {
    runtime: AdminRuntime,
    client: Object,
    url: String,
}

/// The admin connection's runtime; shut down without waiting when the handle drops, so
/// that dropping it inside async code (a test) does not block.
struct AdminRuntime(Option<tokio::runtime::Runtime>);

impl std::ops::Deref for AdminRuntime {
    type Target = tokio::runtime::Runtime;

    fn deref(&self) -> &Self::Target {
        match &self.0 {
            Some(runtime) => runtime,
            // Taken only in `drop`.
            None => unreachable!("the admin runtime is used after it was shut down"),
        }
    }
}

impl Drop for AdminRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Runs `work` to completion on `runtime`, on a thread of its own.
pub(super) fn block_on<F>(runtime: &tokio::runtime::Runtime, work: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(
        |scope| match scope.spawn(|| runtime.block_on(work)).join() {
            Ok(output) => output,
            Err(panic) => std::panic::resume_unwind(panic),
        },
    )
}

/// The runtime a synchronous client (an admin command, a copy) drives its connection on.
pub(super) fn client_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| Error::Unusable {
            what: "start the database client".to_owned(),
            reason: err.to_string(),
        })
}

impl Admin {
    /// Connects to the database at `url` and brings its schema up to date. Admin writes
    /// are rare, so they are always fully durable.
    pub(in crate::db) fn open(url: &PostgresUrl) -> Result<Admin> {
        let runtime = client_runtime()?;
        let client = block_on(&runtime, async {
            let tls = tls::connector(url)?;
            let config = connection_config(url, Durability::Full, TIMEOUT);
            let manager = Manager::from_config(
                config,
                tls,
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            let pool = Pool::builder(manager)
                .max_size(1)
                .runtime(Runtime::Tokio1)
                .wait_timeout(Some(TIMEOUT))
                .create_timeout(Some(TIMEOUT))
                .build()
                .map_err(|err| Error::Unusable {
                    what: format!("connect to the database {url}"),
                    reason: err.to_string(),
                })?;
            let mut client = pool.get().await?;
            schema::migrate(&mut client).await?;
            Ok::<_, Error>(client)
        })?;
        Ok(Admin {
            runtime: AdminRuntime(Some(runtime)),
            client,
            url: url.to_string(),
        })
    }

    /// Creates a user.
    pub(in crate::db) fn create_user(
        &mut self,
        id: &str,
        email: Option<&str>,
        password_hash: Option<&str>,
    ) -> Result<()> {
        let client = &self.client;
        block_on(&self.runtime, async move {
            let now = super::instant(&Timestamp::now())?;
            client
                .execute(super::INSERT_USER, &[&id, &email, &password_hash, &now])
                .await?;
            Ok(())
        })
    }

    /// Stores a session for an existing user.
    pub(in crate::db) fn create_session(
        &mut self,
        user_id: &str,
        token_hash: &[u8; 32],
        expires_at: &Timestamp,
    ) -> Result<()> {
        let client = &self.client;
        block_on(&self.runtime, async move {
            require_user(client, user_id).await?;
            insert_session(client, token_hash, user_id, expires_at).await
        })
    }

    /// Creates a chat for an existing user.
    pub(in crate::db) fn create_chat(
        &mut self,
        owner: &str,
        name: &str,
        model: &str,
    ) -> Result<i64> {
        let client = &self.client;
        block_on(&self.runtime, async move {
            require_user(client, owner).await?;
            Ok(insert_chat(client, owner, name, model).await?.id)
        })
    }

    /// The sessions of a user, newest first.
    pub(in crate::db) fn list_sessions(&mut self, user_id: &str) -> Result<Vec<SessionInfo>> {
        let client = &self.client;
        block_on(&self.runtime, async move {
            require_user(client, user_id).await?;
            let rows = client
                .query(
                    "SELECT token_hash, created_at, expires_at FROM sessions WHERE user_id = $1 \
                     ORDER BY created_at DESC",
                    &[&user_id],
                )
                .await?;
            rows.iter()
                .map(|row| {
                    let hash: &[u8] = row.try_get(0)?;
                    Ok(SessionInfo {
                        hash_prefix: crate::domain::hex(&hash[..hash.len().min(6)]),
                        created_at: Timestamp::from_datetime(row.try_get(1)?),
                        expires_at: Timestamp::from_datetime(row.try_get(2)?),
                    })
                })
                .collect()
        })
    }

    /// Deletes the session with this token hash; whether there was one.
    pub(in crate::db) fn revoke_session(&mut self, token_hash: &[u8; 32]) -> Result<bool> {
        let client = &self.client;
        block_on(&self.runtime, super::delete_session(client, token_hash))
    }

    /// Deletes every session of a user; how many there were.
    pub(in crate::db) fn revoke_all_sessions(&mut self, user_id: &str) -> Result<usize> {
        let client = &self.client;
        block_on(&self.runtime, async move {
            require_user(client, user_id).await?;
            end_sessions(&***client, None, Some(user_id)).await
        })
    }

    /// Revokes the one session whose token hash starts with `hex_prefix` (lower case).
    pub(in crate::db) fn revoke_session_by_prefix(
        &mut self,
        hex_prefix: &str,
    ) -> Result<PrefixMatch> {
        let client = &mut self.client;
        block_on(&self.runtime, async move {
            let tx = client.transaction().await?;
            let rows = tx
                .query(
                    "SELECT token_hash FROM sessions \
                     WHERE left(encode(token_hash, 'hex'), length($1)) = $1 FOR UPDATE",
                    &[&hex_prefix],
                )
                .await?;
            let found = match rows.as_slice() {
                [] => PrefixMatch::None,
                [row] => {
                    let hash: &[u8] = row.try_get(0)?;
                    end_sessions(&*tx, Some(hash), None).await?;
                    PrefixMatch::Revoked
                }
                many => PrefixMatch::Ambiguous(many.len()),
            };
            tx.commit().await?;
            Ok(found)
        })
    }

    /// The user with this id, if any.
    pub(in crate::db) fn find_user(&mut self, user_id: &str) -> Result<Option<User>> {
        let client = &self.client;
        block_on(&self.runtime, find_user(client, user_id))
    }

    /// Every user, oldest first (ties by id).
    pub(in crate::db) fn list_users(&mut self) -> Result<Vec<User>> {
        let client = &self.client;
        block_on(&self.runtime, async move {
            let rows = client
                .query(
                    "SELECT id, primary_email, created_at FROM users ORDER BY created_at, id",
                    &[],
                )
                .await?;
            rows.iter().map(user_from_row).collect()
        })
    }

    /// Deletes a user and everything of theirs, in one transaction. Their chats are
    /// locked first, in the order appends lock them, so that a server appending to one
    /// meanwhile waits instead of deadlocking.
    pub(in crate::db) fn delete_user(&mut self, user_id: &str) -> Result<DeletedUser> {
        let client = &mut self.client;
        block_on(&self.runtime, async move {
            let tx = client.transaction().await?;
            let deleted = delete_user(&tx, user_id)
                .await?
                .ok_or(Error::NotFound(Entity::User))?;
            tx.commit().await?;
            Ok(deleted)
        })
    }

    /// Sets a user's password hash and revokes all of the user's sessions.
    pub(in crate::db) fn set_password(
        &mut self,
        user_id: &str,
        password_hash: &str,
    ) -> Result<usize> {
        let client = &mut self.client;
        block_on(&self.runtime, async move {
            let tx = client.transaction().await?;
            let changed = tx
                .execute(
                    "UPDATE users SET password_hash = $2 WHERE id = $1",
                    &[&user_id, &password_hash],
                )
                .await?;
            if changed == 0 {
                return Err(Error::NotFound(Entity::User));
            }
            let revoked = end_sessions(&*tx, None, Some(user_id)).await?;
            tx.commit().await?;
            Ok(revoked)
        })
    }

    /// Runs `VACUUM (ANALYZE)` on this program's tables: the space of deleted rows
    /// becomes reusable (it is returned to the file system only at the end of a table)
    /// and the planner's statistics are fresh; autovacuum does the same by itself. The
    /// database's size before and after.
    pub(in crate::db) fn compact(&mut self) -> Result<Compacted> {
        let client = &self.client;
        block_on(&self.runtime, async move {
            let size = async || -> Result<u64> {
                let row = client
                    .query_one("SELECT pg_database_size(current_database())", &[])
                    .await?;
                Ok(row.try_get::<_, i64>(0)?.unsigned_abs())
            };
            let before = size().await?;
            client
                .batch_execute(
                    "VACUUM (ANALYZE) users, sessions, chat_conversations, chat_messages, \
                     idempotency_keys, changes",
                )
                .await?;
            Ok(Compacted {
                before,
                after: size().await?,
            })
        })
    }

    /// Checks the schema and the data (see the module docs of `schema`): the schema
    /// version; that every constraint of the schema is there and validated, every index
    /// valid and the counting trigger enabled; that every message belongs to its chat's
    /// owner; and that every user's storage counts match their messages. Returns every
    /// problem found.
    pub(in crate::db) fn check(&mut self) -> Result<Vec<String>> {
        let client = &self.client;
        block_on(&self.runtime, async move {
            let mut problems = Vec::new();
            let version = schema::stored_version(client).await?;
            if version != schema::SCHEMA_VERSION {
                problems.push(format!(
                    "schema version {version}, expected {}",
                    schema::SCHEMA_VERSION
                ));
            }
            for (table, constraint) in CONSTRAINTS {
                let row = client
                    .query_opt(
                        "SELECT convalidated FROM pg_constraint \
                         WHERE conname = $1 AND conrelid = to_regclass($2)",
                        &[constraint, table],
                    )
                    .await?;
                match row {
                    None => {
                        problems.push(format!("{table}: the constraint {constraint} is missing"))
                    }
                    Some(row) if !row.try_get::<_, bool>(0)? => problems.push(format!(
                        "{table}: the constraint {constraint} is not validated"
                    )),
                    Some(_) => {}
                }
            }
            for row in client
                .query(
                    "SELECT i.indexrelid::regclass::text FROM pg_index i \
                     WHERE i.indrelid = ANY (ARRAY[to_regclass('users'), to_regclass('sessions'), \
                     to_regclass('chat_conversations'), to_regclass('chat_messages'), \
                     to_regclass('idempotency_keys')]) AND NOT (i.indisvalid AND i.indisready)",
                    &[],
                )
                .await?
            {
                let index: String = row.try_get(0)?;
                problems.push(format!(
                    "the index {index} is not valid (rebuild it with REINDEX)"
                ));
            }
            let trigger = client
                .query_opt(
                    "SELECT tgenabled <> 'D' FROM pg_trigger \
                     WHERE tgname = 'chat_messages_uncount' AND tgrelid = to_regclass('chat_messages')",
                    &[],
                )
                .await?;
            match trigger {
                None => problems
                    .push("chat_messages: the trigger chat_messages_uncount is missing".to_owned()),
                Some(row) if !row.try_get::<_, bool>(0)? => problems.push(
                    "chat_messages: the trigger chat_messages_uncount is disabled".to_owned(),
                ),
                Some(_) => {}
            }
            for row in client
                .query(
                    "SELECT m.id FROM chat_messages m JOIN chat_conversations c \
                     ON c.id = m.chat_conversation_id WHERE m.neptun_user_id <> c.neptun_user_id \
                     ORDER BY m.id LIMIT 100",
                    &[],
                )
                .await?
            {
                let id: i64 = row.try_get(0)?;
                problems.push(format!(
                    "message {id} belongs to another user than its chat"
                ));
            }
            for row in client
                .query(
                    "SELECT u.id, u.stored_messages, u.stored_bytes, \
                     coalesce(m.messages, 0), coalesce(m.bytes, 0) FROM users u \
                     LEFT JOIN (SELECT neptun_user_id, count(*) AS messages, \
                         sum(octet_length(message))::bigint AS bytes \
                         FROM chat_messages GROUP BY neptun_user_id) m \
                     ON m.neptun_user_id = u.id \
                     WHERE u.stored_messages <> coalesce(m.messages, 0) \
                         OR u.stored_bytes <> coalesce(m.bytes, 0) \
                     ORDER BY u.id LIMIT 100",
                    &[],
                )
                .await?
            {
                let (user, messages, bytes, real_messages, real_bytes): (
                    String,
                    i64,
                    i64,
                    i64,
                    i64,
                ) = (
                    row.try_get(0)?,
                    row.try_get(1)?,
                    row.try_get(2)?,
                    row.try_get(3)?,
                    row.try_get(4)?,
                );
                problems.push(format!(
                    "user {user:?} is counted with {messages} messages of {bytes} bytes, \
                     but keeps {real_messages} of {real_bytes}"
                ));
            }
            Ok(problems)
        })
    }

    /// Refuses: a PostgreSQL database is backed up with PostgreSQL's own tools.
    pub(in crate::db) fn backup(&mut self, _dest: &Path) -> Result<()> {
        Err(Error::Unusable {
            what: format!("back up the PostgreSQL database {}", self.url),
            reason: "neptun-chat backup writes SQLite files only; use pg_dump \
                     (pg_dump --format=custom --file=FILE DBNAME), or copy the database \
                     into an SQLite file with `neptun-chat copy --to FILE`"
                .to_owned(),
        })
    }
}

/// Every constraint the schema states, by table.
const CONSTRAINTS: &[(&str, &str)] = &[
    ("users", "users_pkey"),
    ("users", "users_primary_email_key"),
    ("sessions", "sessions_pkey"),
    ("sessions", "sessions_token_hash_check"),
    ("sessions", "sessions_user_id_fkey"),
    ("chat_conversations", "chat_conversations_pkey"),
    (
        "chat_conversations",
        "chat_conversations_neptun_user_id_fkey",
    ),
    ("chat_messages", "chat_messages_pkey"),
    ("chat_messages", "chat_messages_chat_conversation_id_fkey"),
    ("chat_messages", "chat_messages_neptun_user_id_fkey"),
    ("chat_messages", "chat_messages_actor_check"),
    ("idempotency_keys", "idempotency_keys_pkey"),
    ("idempotency_keys", "idempotency_keys_user_id_fkey"),
    ("idempotency_keys", "idempotency_keys_request_hash_check"),
    ("changes", "changes_pkey"),
    ("changes", "changes_user_id_fkey"),
    ("changes", "changes_kind_check"),
];

/// `NotFound(User)` unless the user exists.
async fn require_user(client: &deadpool_postgres::ClientWrapper, id: &str) -> Result<()> {
    match client
        .query_opt("SELECT 1 FROM users WHERE id = $1", &[&id])
        .await?
    {
        Some(_) => Ok(()),
        None => Err(Error::NotFound(Entity::User)),
    }
}

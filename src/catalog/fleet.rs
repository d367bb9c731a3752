//! The fleet alarms this daemon has raised (`fleet.watch`): a stale host (env `""`)
//! or environment of any host in the store, raised once, cleared when it recovers.

use chrono::Utc;
use rusqlite::params;

use super::db::Catalog;
use super::error::CatalogError;
use super::records::time_text;

/// A raised alarm's key: host and environment (`""` for the host itself).
pub type AlarmKey = (String, String);

impl Catalog {
    /// Every alarm raised and not cleared.
    pub fn fleet_alarms(&self) -> Result<Vec<AlarmKey>, CatalogError> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare_cached("SELECT host, env FROM fleet_alarms ORDER BY host, env")?;
        let alarms = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(alarms)
    }

    /// Records an alarm; false if it was already raised.
    pub fn raise_fleet_alarm(
        &self,
        host: &str,
        env: &str,
        reason: &str,
    ) -> Result<bool, CatalogError> {
        let conn = self.lock();
        let added = conn.execute(
            "INSERT OR IGNORE INTO fleet_alarms (host, env, since, reason) VALUES (?1, ?2, ?3, ?4)",
            params![
                host,
                env,
                time_text(Utc::now()),
                crate::message::one_line(reason)
            ],
        )?;
        Ok(added == 1)
    }

    /// Clears an alarm; false if it was not raised.
    pub fn clear_fleet_alarm(&self, host: &str, env: &str) -> Result<bool, CatalogError> {
        let conn = self.lock();
        let removed = conn.execute(
            "DELETE FROM fleet_alarms WHERE host = ?1 AND env = ?2",
            params![host, env],
        )?;
        Ok(removed == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alarm_is_raised_once_and_cleared_once() {
        let catalog = Catalog::in_memory().unwrap();
        assert!(
            catalog
                .raise_fleet_alarm("web-02", "", "no heartbeat")
                .unwrap()
        );
        assert!(
            !catalog
                .raise_fleet_alarm("web-02", "", "no heartbeat")
                .unwrap()
        );
        assert_eq!(
            catalog.fleet_alarms().unwrap(),
            [("web-02".to_owned(), String::new())]
        );
        assert!(catalog.clear_fleet_alarm("web-02", "").unwrap());
        assert!(!catalog.clear_fleet_alarm("web-02", "").unwrap());
    }
}

//! GetSensorStats: one sensor's statistics, or every sensor's in pages
//! (`stats_paging.rs` decides the page).
//!
//! A caller whose identity may read only some sensors asks for one of them
//! (any other is `PERMISSION_DENIED`), or for every sensor, which means
//! every sensor it may read: the store's pages are walked from the cursor
//! and filtered until the reply is full or the sensors end, so the pages a
//! client walks hold exactly the permitted sensors, in id order, and
//! `next_cursor` works as for everyone else.

use sensorhub_core::SensorStats;
use sensorhub_proto as pb;
use tonic::{Request, Response, Status};

use super::SensorHub;
use crate::auth::{Identity, Scope};
use crate::convert::{stats_to_wire, store_status};
use crate::stats_paging::{MAX_STATS_PER_REPLY, StatsPaging};

pub(super) async fn get_sensor_stats(
    hub: &SensorHub,
    request: Request<pb::StatsRequest>,
) -> Result<Response<pb::StatsReply>, Status> {
    let _slot = hub.admit()?;
    let identity = Identity::of(&request)?;
    let request = request.into_inner();
    if !request.sensor_id.is_empty() {
        hub.readable(&identity, &request.sensor_id)?;
        let stats = hub
            .store
            .stats(Some(&request.sensor_id))
            .await
            .map_err(|e| store_status(&e))?;
        return Ok(Response::new(pb::StatsReply {
            sensors: stats.into_iter().map(stats_to_wire).collect(),
            next_cursor: String::new(),
        }));
    }
    // Every sensor, one page per call (stats_paging.rs).
    let paging = StatsPaging::of(&request)?;
    let page = match &identity.read {
        Scope::All => hub
            .store
            .stats_page(&request.cursor, paging.to_read())
            .await
            .map_err(|e| store_status(&e))?,
        scope => permitted_page(hub, scope, &request.cursor, paging.to_read()).await?,
    };
    Ok(Response::new(paging.reply(page)?))
}

/// The first `wanted` sensors after `cursor` that `scope` permits.
async fn permitted_page(
    hub: &SensorHub,
    scope: &Scope,
    cursor: &str,
    wanted: usize,
) -> Result<Vec<SensorStats>, Status> {
    let batch = MAX_STATS_PER_REPLY + 1;
    let mut after = cursor.to_owned();
    let mut permitted = Vec::new();
    loop {
        let page = hub
            .store
            .stats_page(&after, batch)
            .await
            .map_err(|e| store_status(&e))?;
        let more = page.len() == batch;
        if let Some(last) = page.last() {
            after.clone_from(&last.sensor_id);
        }
        permitted.extend(page.into_iter().filter(|s| scope.permits(&s.sensor_id)));
        if permitted.len() >= wanted {
            permitted.truncate(wanted);
            return Ok(permitted);
        }
        if !more {
            return Ok(permitted);
        }
    }
}

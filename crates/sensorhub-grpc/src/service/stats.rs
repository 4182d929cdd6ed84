//! GetSensorStats: one sensor's statistics, or every sensor's in pages
//! (`stats_paging.rs` decides the page).

use sensorhub_proto as pb;
use tonic::{Request, Response, Status};

use super::SensorHub;
use crate::convert::{stats_to_wire, store_status};
use crate::stats_paging::StatsPaging;

pub(super) async fn get_sensor_stats(
    hub: &SensorHub,
    request: Request<pb::StatsRequest>,
) -> Result<Response<pb::StatsReply>, Status> {
    let _slot = hub.admit()?;
    let request = request.into_inner();
    if !request.sensor_id.is_empty() {
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
    let page = hub
        .store
        .stats_page(&request.cursor, paging.to_read())
        .await
        .map_err(|e| store_status(&e))?;
    Ok(Response::new(paging.reply(page)?))
}

//! GetSensorReadings: one sensor's history page by page from the store,
//! then (follow) its live tail, through a channel of two pages.

use futures_util::StreamExt;
use opentelemetry::context::FutureExt as _;
use sensorhub_core::{HistoryCursor, HistoryQuery, SharedStore, StoredReading};
use sensorhub_proto as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{BoxStream, Lifecycle, SensorHub};
use crate::auth::Identity;
use crate::convert::{invalid_request, reading_to_wire, store_status};
use crate::deadline;
use crate::service_metrics::RpcKind;
use crate::store_spans::StoreSpans;

pub(super) async fn get_sensor_readings(
    hub: &SensorHub,
    request: Request<pb::SensorRequest>,
) -> Result<Response<BoxStream<pb::SensorReading>>, Status> {
    let timeout = deadline::requested_timeout(request.metadata());
    let identity = Identity::of(&request)?;
    let request = request.into_inner();
    let query = history_query(&request)?;
    // Refused before anything is read or sent.
    hub.readable(&identity, &request.sensor_id)?;
    let (tx, rx) = mpsc::channel::<Result<Vec<StoredReading>, Status>>(2);
    let reader = HistoryReader {
        _active: hub.metrics.stream(RpcKind::ServerStream),
        store: hub.store.clone(),
        spans: hub.spans.clone(),
        page_size: hub.config.page_size,
        life: hub.life.clone(),
        limit: (request.limit > 0).then_some(request.limit),
        follow: request.follow,
    };
    // The reader works in its own task: it carries the call's context,
    // so its spans and logs belong to the call's trace.
    tokio::spawn(reader.run(query, tx).with_current_context());
    let stream = ReceiverStream::new(rx).flat_map(|page| {
        let items: Vec<Result<pb::SensorReading, Status>> = match page {
            Ok(page) => page
                .into_iter()
                .map(|r| Ok(reading_to_wire(r.reading)))
                .collect(),
            Err(status) => vec![Err(status)],
        };
        futures_util::stream::iter(items)
    });
    Ok(Response::new(deadline::limit(Box::pin(stream), timeout)))
}

/// Checks a `GetSensorReadings` request and turns it into a store query.
fn history_query(request: &pb::SensorRequest) -> Result<HistoryQuery, Status> {
    let refuse = invalid_request;
    sensorhub_core::validation::check_sensor_id(&request.sensor_id)
        .map_err(|v| refuse(v.field, v.description))?;
    for (field, value) in [("since", request.since), ("until", request.until)] {
        if value < 0 {
            return Err(refuse(
                field,
                format!("must be Unix seconds, or 0 for no bound, got {value}"),
            ));
        }
    }
    if request.since > 0 && request.until > 0 && request.until <= request.since {
        return Err(refuse(
            "until",
            format!(
                "must be after since ({}), got {}",
                request.since, request.until
            ),
        ));
    }
    Ok(HistoryQuery {
        sensor_id: request.sensor_id.clone(),
        since: (request.since > 0).then_some(request.since),
        until: (request.until > 0).then_some(request.until),
        up_to_seq: None,
    })
}

/// Streams one sensor's history page by page, then (follow) its live tail.
struct HistoryReader {
    /// Counts the call in `sensorhub.streams.active` while the reader runs.
    _active: crate::service_metrics::ActiveStream,
    store: SharedStore,
    spans: StoreSpans,
    page_size: usize,
    life: Lifecycle,
    limit: Option<u64>,
    follow: bool,
}

type PageSender = mpsc::Sender<Result<Vec<StoredReading>, Status>>;

impl HistoryReader {
    async fn run(self, query: HistoryQuery, tx: PageSender) {
        if let Err(status) = self.stream(query, &tx).await {
            let _ = tx.send(Err(status)).await;
        }
    }

    async fn stream(&self, mut query: HistoryQuery, tx: &PageSender) -> Result<(), Status> {
        let mut committed = self.store.committed_seq();
        // Follow: history up to this point, the tail after it. No gap, no
        // repeat, and everything acknowledged before the call is history.
        let snapshot = self
            .store
            .caught_up_seq()
            .await
            .map_err(|e| store_status(&e))?;
        committed.borrow_and_update();
        if self.follow {
            query.up_to_seq = Some(snapshot);
        }
        // `limit` with follow is `tail -n N -f`: the last N readings of the
        // history, then the tail. Without follow, the first N from `since`.
        let mut cursor = match (self.follow, self.limit) {
            (true, Some(n)) => {
                let start = self.store.history_last(&query, n);
                tokio::select! {
                    _ = tx.closed() => return Ok(()),
                    start = start => start.map_err(|e| store_status(&e))?,
                }
            }
            _ => HistoryCursor::default(),
        };
        let mut remaining = self.limit.unwrap_or(u64::MAX);
        while remaining > 0 {
            let page_size = remaining.min(self.page_size as u64) as usize;
            let page = tokio::select! {
                _ = tx.closed() => return Ok(()),
                page = self.spans.select(self.store.history_page(&query, cursor, page_size)) => page.map_err(|e| store_status(&e))?,
            };
            let full = page.len() == page_size;
            remaining -= page.len() as u64;
            cursor.advance(&page);
            if !page.is_empty() && tx.send(Ok(page)).await.is_err() {
                return Ok(());
            }
            if !full {
                break;
            }
        }
        if !self.follow {
            return Ok(());
        }

        let in_range = |r: &StoredReading| {
            query.since.is_none_or(|s| r.reading.timestamp >= s)
                && query.until.is_none_or(|u| r.reading.timestamp < u)
        };
        let mut after = snapshot;
        loop {
            let page = self
                .store
                .tail_page(&query.sensor_id, after, self.page_size)
                .await
                .map_err(|e| store_status(&e))?;
            let full = page.len() == self.page_size;
            if let Some(last) = page.last() {
                after = last.seq;
            }
            let page: Vec<_> = page.into_iter().filter(in_range).collect();
            if !page.is_empty() && tx.send(Ok(page)).await.is_err() {
                return Ok(());
            }
            if full {
                continue;
            }
            tokio::select! {
                biased;
                _ = self.life.draining.cancelled() => {
                    return Err(Status::unavailable(
                        "the server is shutting down; subscribe again to a running server with since set to the last timestamp you received",
                    ));
                }
                _ = tx.closed() => return Ok(()),
                changed = committed.changed() => if changed.is_err() {
                    return Err(Status::unavailable("the store closed"));
                },
            }
        }
    }
}

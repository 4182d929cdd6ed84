//! Looking a replica set's names up again, and admitting and removing the
//! addresses whose answers change.
//!
//! Why: a name's addresses move (a headless Kubernetes service as pods come
//! and go, a record pointed at a new host), and a client that resolved them
//! once would send to the old ones for as long as it runs. The names are
//! looked up again every [`ClientConfig::dns_refresh`](super::ClientConfig)
//! (never, when it is zero), and sooner, at most once a second, when every
//! address of a name fails its health check or a call to a name's only
//! address fails: a replica that died may have a successor elsewhere.
//!
//! A new address is admitted as at start: a connection first (one that
//! cannot be made is tried again at the next lookup), then a health check
//! when the set will have several (one that fails comes in ejected, and its
//! checker lets it in once it passes). An address gone from the answer
//! leaves every balancer, its checker stops, and its counters leave the
//! metrics; those that stay keep theirs. A lookup that fails, or answers no
//! address, keeps the name's last addresses, logged once when it starts
//! failing and once when it recovers.
//!
//! Invariant: a refresh never removes the last endpoint.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures_util::FutureExt as _;
use tokio::time::Instant;

use super::{Shared, Target, check, first_check_passed, target_endpoint, target_error};

/// The shortest time between two lookups made at once (after a failure).
pub(super) const SOONEST: Duration = Duration::from_secs(1);

/// Looks the set's names up again until the set and its balancers are gone.
pub(super) async fn follow_names(shared: Arc<Shared>) {
    let every = shared.config.dns_refresh;
    let mut last = Instant::now();
    let mut failing = vec![false; shared.servers.len()];
    loop {
        let due = (!every.is_zero())
            .then(|| last.checked_add(every))
            .flatten();
        let periodic = async {
            match due {
                Some(due) => tokio::time::sleep_until(due).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = periodic => {}
            () = shared.resolve_soon.notified() => tokio::time::sleep_until(last + SOONEST).await,
            () = shared.members.closed() => return,
        }
        if shared.members.is_closed() {
            return;
        }
        last = Instant::now();
        refresh(&shared, &mut failing).await;
    }
}

/// One lookup of every name, and the members changed to its answers.
async fn refresh(shared: &Arc<Shared>, failing: &mut [bool]) {
    let current = shared.members.borrow().clone();
    let mut wanted: Vec<Target> = Vec::new();
    for (index, server) in shared.servers.iter().enumerate() {
        let addresses = match server.addresses(&*shared.config.resolver).await {
            Ok(addresses) if !addresses.is_empty() => {
                if std::mem::replace(&mut failing[index], false) {
                    tracing::info!(server = %server.url, "the name resolves again: following its addresses");
                }
                addresses
            }
            answer => {
                if !std::mem::replace(&mut failing[index], true) {
                    let error = match answer {
                        Err(error) => error.to_string(),
                        Ok(_) => "no address".to_owned(),
                    };
                    tracing::warn!(server = %server.url, %error, "cannot look the name up again: keeping the addresses it had");
                }
                current
                    .iter()
                    .filter(|m| m.stats.target.server == index)
                    .map(|m| m.stats.target.address)
                    .collect()
            }
        };
        for address in addresses {
            if !wanted.iter().any(|t| t.address == address) {
                wanted.push(Target::new(server, index, address));
            }
        }
    }
    let mut leaving: Vec<u64> = current
        .iter()
        .filter(|m| !wanted.iter().any(|t| t.address == m.stats.target.address))
        .map(|m| m.id)
        .collect();
    let new = wanted
        .into_iter()
        .filter(|t| !current.iter().any(|m| m.stats.target.address == t.address));
    let probes = new.map(|target| async move {
        let channel = match target_endpoint(&shared.config, &target) {
            Ok(endpoint) => endpoint
                .connect()
                .await
                .map_err(|e| target_error(&shared.config, &target, &e)),
            Err(error) => Err(error),
        };
        (target, channel)
    });
    let mut reached = Vec::new();
    for (target, channel) in futures_util::future::join_all(probes).await {
        match channel {
            Ok(channel) => reached.push((target, channel)),
            Err(error) => {
                tracing::debug!(endpoint = %target.address, %error, "a new address of the name does not answer: tried again at the next lookup")
            }
        }
    }
    if current.len() == leaving.len() && reached.is_empty() {
        // Nothing to go to: keep what is there.
        leaving.clear();
    }
    if leaving.is_empty() && reached.is_empty() {
        return;
    }
    let several = current.len() - leaving.len() + reached.len() > 1;
    let healthy = if several {
        let checks = reached.iter().map(|(_, channel)| {
            check(channel.clone()).map(|result| first_check_passed(&result, true))
        });
        futures_util::future::join_all(checks).await
    } else {
        vec![true; reached.len()]
    };
    let mut channels = BTreeMap::new();
    let mut joining = Vec::with_capacity(reached.len());
    for ((target, channel), healthy) in reached.into_iter().zip(healthy) {
        tracing::info!(endpoint = %target.address, server = %target.server_url, healthy, "a new address of the name: endpoint added");
        let member = shared.member(target, healthy);
        channels.insert(member.id, channel);
        joining.push(member);
    }
    shared.members.send_modify(|members| {
        members.retain(|m| {
            let stays = !leaving.contains(&m.id);
            if !stays {
                tracing::info!(endpoint = %m.stats.target.address, server = %m.stats.target.server_url, "the name no longer has this address: endpoint removed");
            }
            stays
        });
        members.extend(joining);
    });
    shared.check_while_several(channels);
}

//! DescribeUserScramCredentials (`kafka-configs --describe --entity-type users` asks it along
//! with the quotas): the SCRAM mechanisms and iteration counts of users, read from where a
//! ZooKeeper-mode Kafka keeps them — the `SCRAM-SHA-256` / `SCRAM-SHA-512` keys of
//! `/config/users/<user>` (`salt=...,stored_key=...,server_key=...,iterations=N`). kbroker has
//! no SASL listener, so nothing authenticates with them and AlterUserScramCredentials is not
//! served; a user without credentials is RESOURCE_NOT_FOUND, as in Kafka.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use kbroker_coordinator::layout::{desanitize_entity_name, sanitize_entity_name};
use kbroker_coordinator::{cluster, MetadataStore};
use kbroker_reactor::Responder;

use super::{decode, respond_later, HandlerResult, RequestContext};
use crate::broker::Broker;

/// Kafka's ScramMechanism names and type ids.
const MECHANISMS: &[(&str, i8)] = &[("SCRAM-SHA-256", 1), ("SCRAM-SHA-512", 2)];
const RESOURCE_NOT_FOUND: i16 = 91;
const DUPLICATE_RESOURCE: i16 = 92;

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) =
        decode::<DescribeUserScramCredentialsRequest>(&mut body, ctx.version, responder)?;
    let wanted: Option<Vec<String>> = request
        .users
        .as_ref()
        .filter(|u| !u.is_empty())
        .map(|u| u.iter().map(|n| n.name.to_string()).collect());
    let send = respond_later::<DescribeUserScramCredentialsResponse>(ctx, responder);
    broker.admin.with_store(Box::new(move |store| {
        let mut response = DescribeUserScramCredentialsResponse::default();
        match store {
            None => {
                response.error_code = ResponseError::RequestTimedOut.code();
                response.error_message = Some(StrBytes::from_static_str(
                    "the broker's admin queue is full",
                ));
            }
            Some(store) => match describe(store, wanted) {
                Ok(results) => response.results = results,
                Err(e) => {
                    response.error_code = ResponseError::UnknownServerError.code();
                    response.error_message = Some(StrBytes::from_string(e));
                }
            },
        }
        send(response);
    }));
    Ok(())
}

fn result(user: &str, code: i16, message: Option<String>) -> DescribeUserScramCredentialsResult {
    DescribeUserScramCredentialsResult::default()
        .with_user(StrBytes::from_string(user.to_string()))
        .with_error_code(code)
        .with_error_message(message.map(StrBytes::from_string))
}

fn describe(
    store: &dyn MetadataStore,
    wanted: Option<Vec<String>>,
) -> Result<Vec<DescribeUserScramCredentialsResult>, String> {
    let credentials_of = |sanitized: &str| -> Result<Vec<CredentialInfo>, String> {
        let config = cluster::read_entity_config(store, &format!("users/{sanitized}"))
            .map_err(|e| e.to_string())?;
        Ok(MECHANISMS
            .iter()
            .filter_map(|(name, id)| {
                let value = config.config.get(*name)?;
                let iterations = value
                    .split(',')
                    .find_map(|kv| kv.trim().strip_prefix("iterations="))
                    .and_then(|n| n.parse::<i32>().ok())?;
                Some(
                    CredentialInfo::default()
                        .with_mechanism(*id)
                        .with_iterations(iterations),
                )
            })
            .collect())
    };
    let Some(users) = wanted else {
        // Every user with a credential, by name.
        let mut found = BTreeMap::new();
        for sanitized in cluster::entity_children(store, "users").map_err(|e| e.to_string())? {
            let Some(user) = desanitize_entity_name(&sanitized) else {
                continue;
            };
            let infos = credentials_of(&sanitized)?;
            if !infos.is_empty() {
                found.insert(
                    user.clone(),
                    result(&user, 0, None).with_credential_infos(infos),
                );
            }
        }
        return Ok(found.into_values().collect());
    };
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for user in &users {
        if !seen.insert(user.clone()) {
            continue;
        }
        let r = if user.is_empty() {
            result(
                user,
                RESOURCE_NOT_FOUND,
                Some("Username must not be empty".into()),
            )
        } else if users.iter().filter(|u| *u == user).count() > 1 {
            result(
                user,
                DUPLICATE_RESOURCE,
                Some(format!(
                    "Cannot describe SCRAM credentials for the same user twice in a single request: {user}"
                )),
            )
        } else {
            let infos = credentials_of(&sanitize_entity_name(user))?;
            if infos.is_empty() {
                result(
                    user,
                    RESOURCE_NOT_FOUND,
                    Some(format!(
                        "Attempt to describe a user credential that does not exist: {user}"
                    )),
                )
            } else {
                result(user, 0, None).with_credential_infos(infos)
            }
        };
        out.push(r);
    }
    Ok(out)
}

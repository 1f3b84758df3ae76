//! DescribeClientQuotas and AlterClientQuotas (`kafka-configs --entity-type users/clients/ips`,
//! the admin clients' `describeClientQuotas` / `alterClientQuotas`), stored as a
//! ZooKeeper-mode Kafka stores them: `/config/users/<user>`, `/config/clients/<client-id>`,
//! `/config/users/<user>/clients/<client-id>` and `/config/ips/<ip>`, names sanitized the way
//! Kafka does (`<default>` for the default entity), each change announced under
//! `/config/changes`. Kafka's rules: the keys a user or client quota may have are
//! `producer_byte_rate`, `consumer_byte_rate` (whole numbers), `request_percentage` and
//! `controller_mutation_rate`; an IP quota has `connection_creation_rate` (a whole number);
//! anything else is INVALID_REQUEST. kbroker stores and describes quotas; it does not
//! throttle clients by them yet.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, DescribeClientQuotasRequest,
    DescribeClientQuotasResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use kbroker_coordinator::layout::{
    desanitize_entity_name, sanitize_entity_name, EntityConfig, DEFAULT_ENTITY,
};
use kbroker_coordinator::{cluster, MetadataStore, StoreError};
use kbroker_reactor::Responder;

use super::{decode, respond_later, HandlerResult, RequestContext};
use crate::broker::Broker;

const USER: &str = "user";
const CLIENT_ID: &str = "client-id";
const IP: &str = "ip";
const MATCH_EXACT: i8 = 0;
const MATCH_DEFAULT: i8 = 1;

/// The quota keys an entity may have, each with whether it takes whole numbers only.
type QuotaKeys = &'static [(&'static str, bool)];

/// Quota keys of users and clients (`true`: a whole number).
const CLIENT_KEYS: QuotaKeys = &[
    ("producer_byte_rate", true),
    ("consumer_byte_rate", true),
    ("request_percentage", false),
    ("controller_mutation_rate", false),
];
const IP_KEYS: QuotaKeys = &[("connection_creation_rate", true)];

/// A quota entity: user and/or client id, or an IP; `Some(None)` is the default entity.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Entity {
    user: Option<Option<String>>,
    client_id: Option<Option<String>>,
    ip: Option<Option<String>>,
}

fn sanitized(name: &Option<String>) -> String {
    name.as_deref()
        .map_or_else(|| DEFAULT_ENTITY.to_string(), sanitize_entity_name)
}

fn desanitized(znode: &str) -> Option<Option<String>> {
    if znode == DEFAULT_ENTITY {
        return Some(None);
    }
    desanitize_entity_name(znode).map(Some)
}

impl Entity {
    /// The entity's config path under `/config` and the keys its quotas may use.
    fn path(&self) -> Result<(String, QuotaKeys), String> {
        match (&self.user, &self.client_id, &self.ip) {
            (Some(u), Some(c), None) => Ok((
                format!("users/{}/clients/{}", sanitized(u), sanitized(c)),
                CLIENT_KEYS,
            )),
            (Some(u), None, None) => Ok((format!("users/{}", sanitized(u)), CLIENT_KEYS)),
            (None, Some(c), None) => Ok((format!("clients/{}", sanitized(c)), CLIENT_KEYS)),
            (None, None, Some(ip)) => {
                if let Some(ip) = ip {
                    if ip.parse::<std::net::IpAddr>().is_err() {
                        return Err(format!("{ip} is not a valid IP or resolvable host."));
                    }
                }
                Ok((format!("ips/{}", sanitized(ip)), IP_KEYS))
            }
            (_, _, Some(_)) => Err("Invalid quota entity combination, IP entity should not be \
                                    used with user/client ID entity."
                .to_string()),
            _ => Err("Invalid client quota entity".to_string()),
        }
    }

    fn components(&self) -> Vec<(&'static str, Option<String>)> {
        let mut out = Vec::new();
        for (kind, name) in [
            (USER, &self.user),
            (CLIENT_ID, &self.client_id),
            (IP, &self.ip),
        ] {
            if let Some(name) = name {
                out.push((kind, name.clone()));
            }
        }
        out
    }
}

pub fn handle_describe(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) =
        decode::<DescribeClientQuotasRequest>(&mut body, ctx.version, responder)?;
    let send = respond_later::<DescribeClientQuotasResponse>(ctx, responder);
    broker.admin.with_store(Box::new(move |store| {
        use kafka_protocol::messages::describe_client_quotas_response::{
            EntityData, EntryData, ValueData,
        };
        let mut response = DescribeClientQuotasResponse::default();
        let found = match store {
            None => Err((
                ResponseError::RequestTimedOut,
                "the broker's admin queue is full".to_string(),
            )),
            Some(store) => describe(store, &request),
        };
        match found {
            Ok(entries) => {
                response.entries = Some(
                    entries
                        .into_iter()
                        .map(|(entity, values)| {
                            EntryData::default()
                                .with_entity(
                                    entity
                                        .components()
                                        .into_iter()
                                        .map(|(kind, name)| {
                                            EntityData::default()
                                                .with_entity_type(StrBytes::from_static_str(kind))
                                                .with_entity_name(name.map(StrBytes::from_string))
                                        })
                                        .collect(),
                                )
                                .with_values(
                                    values
                                        .into_iter()
                                        .map(|(k, v)| {
                                            ValueData::default()
                                                .with_key(StrBytes::from_string(k))
                                                .with_value(v)
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                )
            }
            Err((e, message)) => {
                response.error_code = e.code();
                response.error_message = Some(StrBytes::from_string(message));
            }
        }
        send(response);
    }));
    Ok(())
}

type Quotas = BTreeMap<Entity, BTreeMap<String, f64>>;

/// Kafka's filter semantics: per entity type a component matches one name (EXACT), the
/// default entity (DEFAULT) or any entity of that type (ANY); without `strict`, entities
/// with further components match too.
fn describe(
    store: &dyn MetadataStore,
    request: &DescribeClientQuotasRequest,
) -> Result<Quotas, (ResponseError, String)> {
    let invalid = |m: &str| (ResponseError::InvalidRequest, m.to_string());
    // Per type: None = no component; Some(None) = ANY; Some(Some(name)) = EXACT/DEFAULT.
    let mut filter: BTreeMap<&str, Option<Option<String>>> = BTreeMap::new();
    for c in &request.components {
        let kind = match c.entity_type.as_str() {
            USER => USER,
            CLIENT_ID => CLIENT_ID,
            IP => IP,
            "" => return Err(invalid("Unexpected empty filter component entity type")),
            other => {
                return Err((
                    ResponseError::UnsupportedVersion,
                    format!("Custom entity type '{other}' not supported"),
                ))
            }
        };
        let wanted = match c.match_type {
            MATCH_EXACT => match &c._match {
                Some(name) => Some(Some(name.to_string())),
                None => return Err(invalid("An exact match needs a name")),
            },
            MATCH_DEFAULT => Some(None),
            _ => None,
        };
        if filter.insert(kind, wanted).is_some() {
            return Err(invalid("Duplicate filter component entity type"));
        }
    }
    if filter.contains_key(IP) && (filter.contains_key(USER) || filter.contains_key(CLIENT_ID)) {
        return Err(invalid(
            "Invalid entity filter component combination, IP filter component should not be \
             used with user or clientId filter component.",
        ));
    }
    let all = all_quotas(store).map_err(|e| (ResponseError::UnknownServerError, e.to_string()))?;
    let matches = |kind: &str, name: &Option<Option<String>>| match filter.get(kind) {
        // No component for this type: the entity must not have it when strict.
        None => name.is_none() || !request.strict,
        Some(None) => name.is_some(),
        Some(Some(wanted)) => name.as_ref() == Some(wanted),
    };
    Ok(all
        .into_iter()
        .filter(|(e, _)| {
            matches(USER, &e.user) && matches(CLIENT_ID, &e.client_id) && matches(IP, &e.ip)
        })
        .filter(|(e, _)| {
            // An IP filter lists IP entities only, a user/client filter no IP entities.
            if filter.contains_key(IP) {
                e.ip.is_some()
            } else if filter.is_empty() {
                true
            } else {
                e.ip.is_none()
            }
        })
        .collect())
}

/// Every stored quota: users, clients, users' clients and IPs with at least one quota key.
fn all_quotas(store: &dyn MetadataStore) -> Result<Quotas, StoreError> {
    let mut out = Quotas::new();
    // (entity, its config path under /config as stored, the keys it may have)
    let mut entities: Vec<(Entity, String, QuotaKeys)> = Vec::new();
    let named = |path: &str| -> Result<Vec<(Option<String>, String)>, StoreError> {
        Ok(cluster::entity_children(store, path)?
            .into_iter()
            .filter_map(|znode| desanitized(&znode).map(|name| (name, znode)))
            .collect())
    };
    for (user, znode) in named("users")? {
        let path = format!("users/{znode}");
        for (client, cz) in named(&format!("{path}/clients"))? {
            let entity = Entity {
                user: Some(user.clone()),
                client_id: Some(client),
                ip: None,
            };
            entities.push((entity, format!("{path}/clients/{cz}"), CLIENT_KEYS));
        }
        let entity = Entity {
            user: Some(user),
            ..Entity::default()
        };
        entities.push((entity, path, CLIENT_KEYS));
    }
    for (client, znode) in named("clients")? {
        let entity = Entity {
            client_id: Some(client),
            ..Entity::default()
        };
        entities.push((entity, format!("clients/{znode}"), CLIENT_KEYS));
    }
    for (ip, znode) in named("ips")? {
        let entity = Entity {
            ip: Some(ip),
            ..Entity::default()
        };
        entities.push((entity, format!("ips/{znode}"), IP_KEYS));
    }
    for (entity, path, keys) in entities {
        let config = cluster::read_entity_config(store, &path)?;
        let values: BTreeMap<String, f64> = config
            .config
            .iter()
            .filter(|(k, _)| keys.iter().any(|(q, _)| q == k))
            .filter_map(|(k, v)| v.trim().parse::<f64>().ok().map(|v| (k.clone(), v)))
            .collect();
        if !values.is_empty() {
            out.insert(entity, values);
        }
    }
    Ok(out)
}

pub fn handle_alter(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) =
        decode::<AlterClientQuotasRequest>(&mut body, ctx.version, responder)?;
    let send = respond_later::<AlterClientQuotasResponse>(ctx, responder);
    broker.admin.with_store(Box::new(move |store| {
        use kafka_protocol::messages::alter_client_quotas_response::{EntityData, EntryData};
        let entries = request
            .entries
            .iter()
            .map(|entry| {
                let outcome = match store {
                    None => Err((
                        ResponseError::RequestTimedOut,
                        "the broker's admin queue is full".to_string(),
                    )),
                    Some(store) => alter(store, entry, request.validate_only),
                };
                let (code, message) = match outcome {
                    Ok(()) => (0, None),
                    Err((e, m)) => (e.code(), Some(StrBytes::from_string(m))),
                };
                EntryData::default()
                    .with_error_code(code)
                    .with_error_message(message)
                    .with_entity(
                        entry
                            .entity
                            .iter()
                            .map(|e| {
                                EntityData::default()
                                    .with_entity_type(e.entity_type.clone())
                                    .with_entity_name(e.entity_name.clone())
                            })
                            .collect(),
                    )
            })
            .collect();
        send(AlterClientQuotasResponse::default().with_entries(entries));
    }));
    Ok(())
}

fn alter(
    store: &dyn MetadataStore,
    entry: &kafka_protocol::messages::alter_client_quotas_request::EntryData,
    validate_only: bool,
) -> Result<(), (ResponseError, String)> {
    let invalid = |m: String| (ResponseError::InvalidRequest, m);
    let mut entity = Entity::default();
    for e in &entry.entity {
        let name = e.entity_name.as_ref().map(|n| n.to_string());
        if name.as_deref() == Some("") {
            return Err(invalid(format!("Empty {} not supported", e.entity_type)));
        }
        let slot = match e.entity_type.as_str() {
            USER => &mut entity.user,
            CLIENT_ID => &mut entity.client_id,
            IP => &mut entity.ip,
            other => {
                return Err(invalid(format!(
                    "Unhandled client quota entity type: {other}"
                )))
            }
        };
        if slot.replace(name).is_some() {
            return Err(invalid(format!("Duplicate {} entity", e.entity_type)));
        }
    }
    let (path, keys) = entity.path().map_err(invalid)?;
    let mut config = cluster::read_entity_config(store, &path)
        .map_err(|e| (ResponseError::UnknownServerError, e.to_string()))?;
    for op in &entry.ops {
        let key = op.key.to_string();
        if op.remove {
            config.config.remove(&key);
            continue;
        }
        let Some((_, whole)) = keys.iter().find(|(k, _)| *k == key) else {
            return Err(invalid(format!("Invalid configuration key {key}")));
        };
        if !op.value.is_finite() {
            return Err(invalid(format!("Configuration {key} must be a number")));
        }
        let text = if *whole {
            let rounded = (op.value + 1e-6).trunc();
            if (rounded - op.value).abs() > 1e-6 {
                return Err(invalid(format!("Configuration {key} must be a LONG value")));
            }
            format!("{}", rounded as i64)
        } else {
            format!("{:?}", op.value)
        };
        config.config.insert(key, text);
    }
    if validate_only {
        return Ok(());
    }
    cluster::change_entity_config(
        store,
        &path,
        &EntityConfig {
            config: config.config,
        },
    )
    .map_err(|e| (ResponseError::UnknownServerError, e.to_string()))
}

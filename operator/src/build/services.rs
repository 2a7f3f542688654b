//! The data, metadata and headless Services of a module; a single-role module has only its
//! role's client-facing Service.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::labels::{Component, pod_selector};
use super::{ADMIN_PORT, MEMCACHED_PORT, names, object_meta};
use crate::validate::Validated;

/// The Service behind CloudServer's `dataClient`, when the module's role serves data.
pub fn data(module: &Validated<'_>) -> Option<Service> {
    let service_port = module.settings.data_port?;
    Some(client_facing(
        module,
        names::data_service(module.name),
        Component::Data,
        port("data", service_port, "data"),
    ))
}

/// The Service behind CloudServer's `metadataClient`, when the module's role serves metadata.
pub fn metadata(module: &Validated<'_>) -> Option<Service> {
    let service_port = module.settings.metadata_port?;
    Some(client_facing(
        module,
        names::metadata_service(module.name),
        Component::Metadata,
        port("metadata", service_port, "metadata"),
    ))
}

/// The StatefulSet's governing Service: it gives each pod the stable DNS name through which
/// the other pods' sidecars reach its memcached. Not-ready addresses are published because a
/// sidecar is only ready once it reaches every memcached, which would otherwise never happen.
pub fn headless(module: &Validated<'_>) -> Service {
    Service {
        metadata: object_meta(
            module,
            names::headless_service(module.name),
            Component::Storage,
        ),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            publish_not_ready_addresses: Some(true),
            selector: Some(pod_selector(module.name)),
            ports: Some(vec![
                port("memcache", i32::from(MEMCACHED_PORT), "memcache"),
                port("admin", i32::from(ADMIN_PORT), "admin"),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn client_facing(
    module: &Validated<'_>,
    name: String,
    component: Component,
    port: ServicePort,
) -> Service {
    let services = &module.module.spec.services;
    let mut metadata = object_meta(module, name, component);
    if !services.annotations.is_empty() {
        metadata.annotations = Some(services.annotations.clone());
    }
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(services.type_.as_str().to_owned()),
            selector: Some(pod_selector(module.name)),
            ports: Some(vec![port]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn port(name: &str, port: i32, target: &str) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port,
        target_port: Some(IntOrString::String(target.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    }
}

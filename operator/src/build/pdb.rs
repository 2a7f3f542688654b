//! The PodDisruptionBudget that keeps node drains from taking several storage pods at once.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::labels::{Component, pod_selector};
use super::{names, object_meta};
use crate::validate::Validated;

pub fn build(module: &Validated<'_>) -> Option<PodDisruptionBudget> {
    let spec = &module.module.spec;
    if spec.replicas <= 1 || !spec.pod_disruption_budget.enabled {
        return None;
    }
    Some(PodDisruptionBudget {
        metadata: object_meta(
            module,
            names::pod_disruption_budget(module.name),
            Component::Storage,
        ),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(spec.pod_disruption_budget.max_unavailable)),
            selector: Some(LabelSelector {
                match_labels: Some(pod_selector(module.name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}

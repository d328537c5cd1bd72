//! Approval and rejection: the registry's rules, the contract-change acknowledgement and, under
//! signed approvals, the detached signatures over the manifest and validation report digests.

use super::*;

impl Lifecycle {
    /// Records an approval. A version whose contract differs from the active one's needs
    /// `acknowledge_contract_change`.
    pub fn approve(
        &self,
        model: &str,
        version: &Version,
        actor: &Actor,
        comment: Option<&str>,
        acknowledge_contract_change: bool,
        signature: Option<airlock_signing::Signature>,
    ) -> Result<VersionState> {
        let rec = self
            .updater
            .registry()
            .model(model)?
            .ok_or_else(|| airlock_updater::Error::UnknownModel(model.into()))?;
        let v =
            rec.versions
                .get(version)
                .ok_or_else(|| airlock_updater::Error::UnknownVersion {
                    model: model.into(),
                    version: version.to_string(),
                })?;
        let change = v
            .validation
            .as_ref()
            .and_then(|r| r.contract_change.clone());
        let comment = match (&change, acknowledge_contract_change) {
            (Some(c), false) => {
                return Err(LifecycleError::Refused(format!(
                    "{model} {version}: {c}; clients may break. Approve with \"acknowledge_contract_change\": true (airlockctl: --acknowledge-contract-change) if that is intended"
                )))
            }
            (Some(_), true) => Some(format!(
                "[contract change acknowledged]{}",
                comment.map(|c| format!(" {c}")).unwrap_or_default()
            )),
            (None, _) => comment.map(str::to_string),
        };
        let signed = match signature {
            None => None,
            Some(sig) => {
                let payload = approval_payload_of(model, v)?;
                let root = self.updater.trust_root()?;
                // The new signature alone must be a valid approver signature...
                match root.count_signatures(
                    airlock_signing::Role::Approver,
                    airlock_signing::SigningContext::Approval,
                    &payload,
                    std::slice::from_ref(&sig),
                ) {
                    Ok(_) | Err(airlock_signing::Error::ThresholdNotMet { valid: 1, .. }) => {}
                    Err(e) => {
                        return Err(LifecycleError::Refused(format!(
                            "the approval signature is not accepted: {e}"
                        )))
                    }
                }
                // ...and with the earlier ones it may reach the role's threshold.
                let mut all: Vec<_> = v.approvals.iter().filter_map(|a| a.signature).collect();
                all.push(sig);
                let threshold_met = root
                    .count_signatures(
                        airlock_signing::Role::Approver,
                        airlock_signing::SigningContext::Approval,
                        &payload,
                        &all,
                    )
                    .is_ok();
                Some(airlock_updater::SignedApproval {
                    signature: sig,
                    threshold_met,
                })
            }
        };
        fault_point("approve");
        let now = self.updater.now()?;
        let state = self.updater.registry().approve(
            now,
            model,
            version,
            actor,
            comment.as_deref(),
            signed,
        )?;
        fault_point("approve:recorded");
        Ok(state)
    }

    /// Rejects a version.
    pub fn reject(
        &self,
        model: &str,
        version: &Version,
        actor: &Actor,
        reason: Option<&str>,
    ) -> Result<()> {
        let now = self.updater.now()?;
        self.updater
            .registry()
            .reject(now, model, version, actor, reason)?;
        // A validation still running for it is stopped (its report says so).
        if self.validator.cancel(model, &version.to_string()) {
            tracing::info!(model, version = %version, "validation stopped: the version was rejected");
        }
        Ok(())
    }

    /// Under the signed-approval policy, a version is promoted only if its recorded approvals
    /// carry a threshold of valid approver signatures under the current trust root: whoever
    /// edits the state database cannot forge an approval.
    pub(super) fn verify_signed_approvals(&self, model: &str, version: &Version) -> Result<()> {
        let rec = self
            .updater
            .registry()
            .model(model)?
            .ok_or_else(|| airlock_updater::Error::UnknownModel(model.into()))?;
        let Some(v) = rec.versions.get(version) else {
            return Err(airlock_updater::Error::UnknownVersion {
                model: model.into(),
                version: version.to_string(),
            }
            .into());
        };
        if v.state != VersionState::Approved {
            // Not approved at all: the registry's refusal says so.
            return Ok(());
        }
        let payload = approval_payload_of(model, v)?;
        let sigs: Vec<_> = v.approvals.iter().filter_map(|a| a.signature).collect();
        self.updater
            .trust_root()?
            .count_signatures(
                airlock_signing::Role::Approver,
                airlock_signing::SigningContext::Approval,
                &payload,
                &sigs,
            )
            .map_err(|e| {
                LifecycleError::Refused(format!(
                    "{model} {version}: its approvals do not carry valid approver signatures under the current trust root ({e}); not promoting"
                ))
            })?;
        Ok(())
    }
}

/// What approvers sign for a version: its manifest's and its validation report's SHA-256.
fn approval_payload_of(
    model: &str,
    v: &airlock_updater::registry::VersionRecord,
) -> Result<Vec<u8>> {
    let report = v.report_digest().ok_or_else(|| {
        LifecycleError::Refused(format!(
            "{model} {}: no validation report to sign yet",
            v.version
        ))
    })?;
    Ok(airlock_signing::approval_payload(
        model,
        &v.version.to_string(),
        &v.manifest_digest,
        &report,
    ))
}

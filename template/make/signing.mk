# Image signing with cosign 2.x (docs/signing.md, scripts/image_signing.py): make keys makes a key pair, make release
# signs what it pushes, make verify-image checks a digest, make deploy refuses an image the public key did not sign.
# The key release signs with: a file (make keys writes keys/signing.key; a missing default file: unsigned images), a
# key reference cosign resolves (env://VAR, awskms://..., gcpkms://..., hashivault://...), or keyless (the CI job's
# OIDC identity, GitHub or GitLab). The same key can sign the models: one EC P-256 key, PEM.
SIGNING_KEY ?= keys/signing.key
# the public key verify-image and deploy check against (commit it); empty: deploy checks nothing
SIGNING_PUBLIC_KEY ?= keys/signing.pub
# images signed keyless in CI: verify their signer instead of a key (docs/signing.md shows GitHub's and GitLab's)
SIGNING_IDENTITY ?=
SIGNING_OIDC_ISSUER ?=
# 1: record signatures in Sigstore's public transparency log too (online), and check the log when verifying
SIGNING_TLOG ?= 0
# 1: the registry speaks plain HTTP, not HTTPS (a local test registry; 127.0.0.1 and localhost need not say so)
REGISTRY_HTTP ?= 0
COSIGN ?= cosign
# the image sign-image and verify-image take: <registry>/<name>@sha256:... (digests.env), or sha256:... of IMAGE
IMAGE_DIGEST ?=
export SIGNING_KEY SIGNING_PUBLIC_KEY SIGNING_IDENTITY SIGNING_OIDC_ISSUER SIGNING_TLOG REGISTRY_HTTP COSIGN

.PHONY: keys sign-image verify-image

keys: ## make an EC P-256 key pair for signing: keys/signing.key (private, git-ignored), keys/signing.pub; never overwrites
	@python3 scripts/image_signing.py keys

sign-image: ## sign IMAGE_DIGEST=<registry>/<name>@sha256:... with SIGNING_KEY (make release signs what it pushes)
	@python3 scripts/image_signing.py sign "$(IMAGE_DIGEST)"

verify-image: ## fail unless IMAGE_DIGEST=<registry>/<name>@sha256:... is signed by SIGNING_PUBLIC_KEY (cosign)
	@python3 scripts/image_signing.py verify "$(IMAGE_DIGEST)"

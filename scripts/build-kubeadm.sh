#!/usr/bin/env bash
# Build kubeadm from the Go module proxy alone (no GitHub, no dl.k8s.io), for the
# tests that run the real `kubeadm config validate` on vipctl's output. The work is
# done by scripts/build-k8s.sh (shared with the lab's kube-apiserver and kubectl).
#
# usage:  scripts/build-kubeadm.sh            prints the binary's path on stdout
#         VIPCTL_KUBEADM=$(scripts/build-kubeadm.sh) go test ./kubeadm/
# env:    KUBEADM_VERSION  Kubernetes version to build (default $K8S_VERSION, else v1.34.4)
#         VIPCTL_CACHE     cache folder (default $HOME/.cache/vipctl); the binary
#                          goes to $VIPCTL_CACHE/k8s/$KUBEADM_VERSION/kubeadm and is
#                          not rebuilt when present.
# Cold cache on 2 cores: a few minutes, and the Go build cache grows by ~1-2 GB.
set -euo pipefail
K8S_VERSION=${KUBEADM_VERSION:-${K8S_VERSION:-v1.34.4}} exec "$(dirname "$0")/build-k8s.sh" kubeadm

# shellcheck shell=bash
# Certificates, service-account keys and kubeconfigs for the local test bed, made with openssl only.
# Sourced by cluster-up.sh after lib.sh. Everything goes to $TESTBED_STATE/pki and $TESTBED_STATE/*.kubeconfig.

PKI="$TESTBED_STATE/pki"

# sign_cert NAME CN [ORG] [SANS] [USAGE] — EC P-256 key + certificate signed by the cluster CA.
# SANS is an openssl subjectAltName value ("DNS:a,IP:1.2.3.4"); USAGE is clientAuth, serverAuth or both.
sign_cert() {
  local name="$1" cn="$2" org="${3:-}" sans="${4:-}" usage="${5:-clientAuth}" subj ext
  subj="/CN=$cn"
  [[ -n "$org" ]] && subj="/O=$org$subj"
  ext="$PKI/$name.ext"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    [[ -n "$sans" ]] && echo "subjectAltName=$sans"
  } >"$ext"
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/$name.key" 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 365 -sha256 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$ext"
}

# write_kubeconfig FILE USER CERT_NAME — client-certificate kubeconfig for the API server on NODE_IP.
write_kubeconfig() {
  local file="$1" user="$2" cert="$3"
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: mousflow-local
  cluster:
    server: https://$NODE_IP:$API_PORT
    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$PKI/$cert.crt")
    client-key-data: $(base64 -w0 <"$PKI/$cert.key")
contexts:
- name: mousflow-local
  context:
    cluster: mousflow-local
    user: $user
current-context: mousflow-local
EOF
  chmod 600 "$file"
}

make_pki() {
  if [[ -f "$PKI/.complete" ]]; then return 0; fi
  rm -rf "$PKI"
  mkdir -p "$PKI"
  chmod 700 "$PKI"
  log "making CA, certificates and service-account keys (openssl)"
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=mousflow-local-ca" -days 3650 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$PKI/ca.crt" 2>/dev/null
  local api_sans="DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN"
  api_sans+=",DNS:localhost,IP:127.0.0.1,IP:$KUBERNETES_SERVICE_IP,IP:$NODE_IP"
  sign_cert apiserver kube-apiserver "" "$api_sans" serverAuth
  sign_cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  sign_cert admin mousflow-admin system:masters
  sign_cert controller-manager system:kube-controller-manager
  sign_cert scheduler system:kube-scheduler
  sign_cert kube-proxy system:kube-proxy
  sign_cert kubelet-client "system:node:$NODE_NAME" system:nodes
  sign_cert kubelet-serving "system:node:$NODE_NAME" system:nodes "DNS:$NODE_NAME,DNS:localhost,IP:$NODE_IP,IP:127.0.0.1" serverAuth
  # Service-account token signing key pair.
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  chmod 600 "$PKI"/*.key

  write_kubeconfig "$TESTBED_KUBECONFIG" mousflow-admin admin
  write_kubeconfig "$TESTBED_STATE/controller-manager.kubeconfig" system:kube-controller-manager controller-manager
  write_kubeconfig "$TESTBED_STATE/scheduler.kubeconfig" system:kube-scheduler scheduler
  write_kubeconfig "$TESTBED_STATE/kube-proxy.kubeconfig" system:kube-proxy kube-proxy
  write_kubeconfig "$TESTBED_STATE/kubelet.kubeconfig" "system:node:$NODE_NAME" kubelet-client
  touch "$PKI/.complete"
}

"""The mousflow Kubernetes operator (kopf): watches MOUS custom resources and drives their processing."""

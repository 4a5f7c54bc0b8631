"""shipper: Kubernetes log shipper for Elasticsearch."""

__version__ = "0.1.0"

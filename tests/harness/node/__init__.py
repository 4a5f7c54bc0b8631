"""A real single-node Kubernetes cluster for the node tests (marker `node`).

cluster.py  etcd, apiserver, controller-manager, scheduler, containerd, kubelet
host.py     what the node changes on the host, put back when it stops
images.py   pause, writer and shipper images as OCI archives, without a registry

python -m tests.harness.node provision   # build and cache everything
python -m tests.harness.node start       # run a node in the foreground
"""

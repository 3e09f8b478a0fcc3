"""Prism over gRPC: the ``prism.v1.KeyValue`` service and the Prism seed's KeyValue interfaces.

``proto/`` holds the sources; the generated modules live in ``prism.grpc._gen``.
The gateway serves them from :mod:`prism.grpc.server` (``server.grpc_port``), over
the same request pipeline as HTTP. Needs ``pip install 'prism[grpc]'``.
"""

"""Launchers for nats-servers on loopback, for tests, demos and local use: the binary and
config lookup, one server (:mod:`~secsync.servers.broker`), a routed cluster, a super-cluster of
regions joined by gateways, a hub with leaf servers, and the TCP relay that partitions regions.

Nothing here is needed to use secsync against a broker run elsewhere."""

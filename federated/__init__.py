"""Several sites acting as one party with Flower: federated build, search and evaluation.

The Flower ServerApp/ClientApp of lmdock live here. A site's ClientApp runs the publisher's
toolchain (`lmdock.client.publish`) and the consumer's flow (`lmdock.client`) on its own data,
and debits its own privacy ledger; only what those already release leaves the site. This
package imports client and common, never the market (`lmdock.server`) or the lab: a federation
talks to a market over gRPC like any other client. See docs/architecture.md.
"""

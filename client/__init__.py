"""The on-prem client: task readers, DP specs, market connection, adapter cache, local runtime."""

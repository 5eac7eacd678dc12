"""The publisher's toolchain: train an adapter (optionally DP-SGD), package, card, publish."""

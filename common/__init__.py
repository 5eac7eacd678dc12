"""Pure, dependency-light core shared by market and client: spec math, privacy, package format."""

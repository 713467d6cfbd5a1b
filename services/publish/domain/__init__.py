"""The publisher's pure core: version cutting, diffs, dataset content hash, CloudEvents. No I/O."""

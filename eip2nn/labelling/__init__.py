"""Label structures with EIPs into a resumable on-disk store."""

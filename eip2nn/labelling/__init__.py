"""Label structures with EIPs into a resumable on-disk store; choose the EIPs an arm trains on."""

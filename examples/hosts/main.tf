# Three VMs in one placement group, spread over the hosts of an rcloud fleet (server config
# `hosts:`): rcloud puts the members of a group on different hosts while there are hosts left.
# Install the provider first: scripts/install-provider.sh (see docs/index.md).

terraform {
  required_providers {
    rcloud = {
      source  = "kdevops/rcloud"
      version = "~> 0.1.0"
    }
  }
}

variable "rcloud_token" {
  description = "An admin token when the server checks tokens (listing hosts needs one)."
  type        = string
  default     = null
  sensitive   = true
}

variable "ssh_public_key" {
  description = "An OpenSSH public key line for the kdevops user, e.g. file(\"~/.ssh/id_ed25519.pub\")."
  type        = string
  default     = null
}

provider "rcloud" {
  endpoint = "http://localhost:8765"
  token    = var.rcloud_token
}

data "rcloud_hosts" "all" {}

resource "rcloud_vm" "node" {
  count = 3

  name            = "ci-node-${count.index}"
  image           = "debian13"
  vcpus           = 1
  memory_gb       = 0.5
  placement_group = "ci"

  # SSH is forwarded from a port on the VM's host (see ssh_port and host).
  network        = { mode = "user" }
  ssh_public_key = var.ssh_public_key
}

output "hosts" {
  description = "Every host of the fleet and its state (online, offline, cordoned)."
  value       = { for h in data.rcloud_hosts.all.hosts : h.name => h.state }
}

output "placement" {
  description = "Which host runs which VM."
  value       = { for vm in rcloud_vm.node : vm.name => vm.host }
}

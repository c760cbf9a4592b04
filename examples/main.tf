# The rcloud design document's example: one VM with a data disk on a libvirt bridge.
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
  type      = string
  default   = null
  sensitive = true
}

provider "rcloud" {
  endpoint = "http://localhost:8765"
  token    = var.rcloud_token # Optional for MVP
}

resource "rcloud_vm" "web_server" {
  name      = "web-01"
  vcpus     = 4
  memory_gb = 8
  image     = "debian13"

  root_disk_gb = 100

  extra_disks = [
    {
      size_gb = 500
      type    = "virtio"
    }
  ]

  network = {
    bridge = "virbr0"
  }
}

output "vm_ip" {
  value = rcloud_vm.web_server.ip_address
}

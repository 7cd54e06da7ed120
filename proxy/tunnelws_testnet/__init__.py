"""The tunnelws test network: origin test server, companion proxy, firewall simulator."""

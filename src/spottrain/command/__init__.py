"""A team's own training script, spot-safe (`task: command`): the node wrapper (`wrapper`) around it, the script's
process (`child`) and its checkpoints between the node and the store (`sync`). The script's side of the contract is
`spottrain_contract.script`; its one-line integrations are `spottrain.integrations`."""

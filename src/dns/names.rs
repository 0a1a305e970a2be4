//! Mesos-DNS naming: label sanitising (`records/labels/labels.go`), the task hash and the agent
//! ID tail used in canonical names (`records/generator.go`).

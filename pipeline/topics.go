package pipeline

import "github.com/asyncinfer/asyncinfer/topics"

// DefaultTopicPrefix is prepended to every topic name.
const DefaultTopicPrefix = topics.DefaultPrefix

// Topics names the topics of one deployment (package topics).
type Topics = topics.Topics

// NewTopics names the topics with a prefix ("" for DefaultTopicPrefix).
func NewTopics(prefix string) Topics { return topics.New(prefix) }

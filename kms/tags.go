package kms

import (
	"context"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/keyflow/keyflow/events"
)

// Tags and descriptions after a key's creation: the AWS KMS API's
// TagResource, UntagResource, ListResourceTags and UpdateKeyDescription,
// and the CLI's `key tag`, `key untag` and `key update-description`. Tags
// follow AWS's rules (at most 50 per key, a key of 1-128 characters that
// does not start with "aws:", a value of 0-256), so a template written for
// AWS applies unchanged. Records name the tag keys, never the values, and
// a description's length, never its text: both are the customer's words.

// Tag is one tag of a key.
type Tag struct {
	Key   string `json:"tagKey"`
	Value string `json:"tagValue"`
}

// Bounds of Key.Tags, as AWS KMS has them.
const (
	MaxTags        = 50
	MaxTagKey      = 128
	MaxTagValue    = 256
	MaxDescription = 8192
)

// ValidateTags checks a key's tags: AWS's bounds, no reserved aws: prefix,
// printable text and no tag key twice.
func ValidateTags(tags []Tag) error {
	if len(tags) > MaxTags {
		return newError(CodeLimitExceeded, "a key has at most %d tags, got %d", MaxTags, len(tags))
	}
	seen := make(map[string]bool, len(tags))
	for _, t := range tags {
		if err := checkTagKey(t.Key); err != nil {
			return err
		}
		if utf8.RuneCountInString(t.Value) > MaxTagValue || !PrintableText(t.Value) {
			return newError(CodeValidation, "the value of tag %q must be at most %d printable characters", truncate(t.Key, 64), MaxTagValue)
		}
		if seen[t.Key] {
			return newError(CodeValidation, "tag %q appears twice", truncate(t.Key, 64))
		}
		seen[t.Key] = true
	}
	return nil
}

func checkTagKey(k string) error {
	if n := utf8.RuneCountInString(k); n == 0 || n > MaxTagKey || !PrintableText(k) {
		return newError(CodeValidation, "a tag key is 1-%d printable characters, got %q", MaxTagKey, truncate(k, 64))
	}
	if strings.HasPrefix(strings.ToLower(k), "aws:") {
		return newError(CodeValidation, "tag keys starting with aws: are reserved (got %q)", truncate(k, 64))
	}
	return nil
}

// checkDescription bounds a key's description and refuses control
// characters (a description is printed by terminals and consoles).
func checkDescription(d string) error {
	if len(d) > MaxDescription {
		return newError(CodeValidation, "description is longer than %d characters", MaxDescription)
	}
	if !PrintableText(d) {
		return newError(CodeValidation, "description must be valid UTF-8 without control characters (no ANSI escapes, newlines or NUL)")
	}
	return nil
}

// TagKeyParams are the inputs of TagKey.
type TagKeyParams struct {
	KeyRef string
	// Tags are set: a tag key the key already has gets the new value.
	Tags []Tag
}

// TagKey sets tags on a key of the caller's tenant.
func (s *Service) TagKey(ctx context.Context, c Caller, p TagKeyParams) (*Key, error) {
	names := make([]string, len(p.Tags))
	for i, t := range p.Tags {
		names[i] = t.Key
	}
	if len(p.Tags) == 0 {
		return nil, s.refuseTags(ctx, c, "tag", p.KeyRef, names, newError(CodeValidation, "TagResource needs at least one tag"))
	}
	return s.changeTags(ctx, c, "tag", p.KeyRef, names, func(k *Key) error {
		if err := ValidateTags(p.Tags); err != nil {
			return err
		}
		for _, t := range p.Tags {
			if i := slices.IndexFunc(k.Tags, func(o Tag) bool { return o.Key == t.Key }); i >= 0 {
				k.Tags[i].Value = t.Value
			} else {
				k.Tags = append(k.Tags, t)
			}
		}
		return ValidateTags(k.Tags)
	})
}

// UntagKeyParams are the inputs of UntagKey.
type UntagKeyParams struct {
	KeyRef string
	// TagKeys are removed; a tag key the key does not have is ignored,
	// as AWS does.
	TagKeys []string
}

// UntagKey removes tags from a key of the caller's tenant.
func (s *Service) UntagKey(ctx context.Context, c Caller, p UntagKeyParams) (*Key, error) {
	if len(p.TagKeys) == 0 {
		return nil, s.refuseTags(ctx, c, "untag", p.KeyRef, p.TagKeys, newError(CodeValidation, "UntagResource needs at least one tag key"))
	}
	return s.changeTags(ctx, c, "untag", p.KeyRef, p.TagKeys, func(k *Key) error {
		for _, name := range p.TagKeys {
			if err := checkTagKey(name); err != nil {
				return err
			}
		}
		k.Tags = slices.DeleteFunc(k.Tags, func(t Tag) bool { return slices.Contains(p.TagKeys, t.Key) })
		return nil
	})
}

// refuseTags records a refused tag change that never reached a key.
func (s *Service) refuseTags(ctx context.Context, c Caller, action, ref string, names []string, refusal error) error {
	_, err := s.changeTags(ctx, c, action, ref, names, func(*Key) error { return refusal })
	return err
}

// changeTags applies change to the key ref names under updateKey, with one
// io.keyflow.key.tags.changed.v1 record.
func (s *Service) changeTags(ctx context.Context, c Caller, action, ref string, names []string, change func(k *Key) error) (*Key, error) {
	keys := make([]string, 0, min(len(names), MaxTags))
	for _, n := range names[:min(len(names), MaxTags)] {
		keys = append(keys, truncate(n, MaxTagKey))
	}
	data := map[string]any{"action": action, "keyRef": truncate(ref, 64), "tagKeys": keys}
	return s.changeKey(ctx, c, events.TypeKeyTagsChanged, ref, data, nil, func(k *Key) (bool, error) {
		return false, change(k)
	})
}

// SetDescription replaces a key's description.
func (s *Service) SetDescription(ctx context.Context, c Caller, ref, description string) (*Key, error) {
	data := map[string]any{"keyRef": truncate(ref, 64), "length": len(description)}
	return s.changeKey(ctx, c, events.TypeKeyDescriptionChanged, ref, data, func(*Key) error {
		return checkDescription(description)
	}, func(k *Key) (bool, error) {
		if k.Description == description {
			return true, nil
		}
		k.Description = description
		return false, nil
	})
}

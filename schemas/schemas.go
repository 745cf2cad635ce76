// Package schemas holds the JSON Schemas (draft 2020-12) of keyflow's wire
// formats, and validates documents against them. It is written for two
// readers: integrators who call keyflow's NATS API from another language,
// and auditors who consume the audit stream and want to check that each
// record has the shape keyflow promises.
//
// # What is here
//
// The schema files are embedded in this package ([FS]) and live in the
// source tree under schemas/:
//
//	defs.json                   shared definitions ($defs), not a message
//	api/<Message>.json          one per request and reply of the NATS API,
//	                            named after the Go type in client/api:
//	                            EncryptRequest, EncryptReply, DecryptRequest,
//	                            DecryptReply, DataKeyRequest, DataKeyReply,
//	                            SignRequest, SignReply, VerifyRequest,
//	                            VerifyReply, MacRequest, MacReply (mac and
//	                            verifymac), PublicKeyRequest, PublicKeyReply,
//	                            RandomRequest, RandomReply, ReEncryptRequest,
//	                            ReEncryptReply, DataKeyPairRequest,
//	                            DataKeyPairReply, BatchEncryptRequest,
//	                            BatchDecryptRequest, BatchDataKeyRequest,
//	                            CreateKeyRequest, KeyRequest, KeyMetadata,
//	                            ListKeysReply, RotateKeyReply,
//	                            AuditTailRequest, AuditTailReply, ErrorReply,
//	                            SealRequest, SealReply, OpenRequest,
//	                            OpenReply, EncapsulateRequest,
//	                            EncapsulateReply, DecapsulateRequest,
//	                            DecapsulateReply, InventoryRequest,
//	                            InventoryReply, ApprovalListRequest,
//	                            ApprovalListReply, ApprovalRequest,
//	                            ApprovalDecisionRequest, Approval,
//	                            TenantPolicy, SetTenantPolicyRequest,
//	                            TenantPolicyReply;
//	                            InventoryReply, SetKeyStateRequest,
//	                            SetKeyStateReply, ScheduleDeletionRequest,
//	                            ScheduleDeletionReply, CompromiseRequest,
//	                            CompromiseReply, SetRotationRequest;
//	                            the generic BatchReply[T] is one file per T:
//	                            BatchEncryptReply, BatchDecryptReply and
//	                            BatchDataKeyReply
//	events/cloudevent.json      the audit event envelope (CloudEvents 1.0,
//	                            structured JSON mode, with keyflow's
//	                            extension attributes)
//	events/<type>.json          the data object of one event type, e.g.
//	                            events/io.keyflow.crypto.encrypt.v1.json
//	policy/KeyPolicy.json       a key policy document (keyflow key
//	                            set-policy), checked by [ValidatePolicy]
//
// Every file has an $id under [BaseURI] (for example
// https://keyflow.io/schemas/api/EncryptRequest.json), and files refer to
// each other by relative references (../defs.json#/$defs/keyRef,
// KeyMetadata.json, ../events/cloudevent.json). The $ids are names, not
// addresses to download from: give your validator all the files.
//
// # What the schemas promise
//
//   - Binary fields (plaintext, ciphertextBlob, message, signature, mac,
//     publicKey, ...) are standard base64 with padding, marked
//     "contentEncoding": "base64" and checked by a pattern, so validators
//     that ignore contentEncoding still check the alphabet.
//   - Names of specs, usages and algorithms (ECDSA_SHA_256,
//     RSAES_OAEP_SHA_256, HMAC_SHA_256, ...) are upper snake case, checked
//     by pattern rather than by a closed list: the server refuses a name
//     that a key does not support, and a new algorithm needs no new schema.
//     Audit events record such names as the caller sent them (cut to 64
//     bytes), so a refused request may show any string there.
//   - Property names mirror the JSON names of the Go types exactly. Every
//     object is closed ("additionalProperties": false): the server decodes
//     requests strictly and refuses unknown fields, and a reply or event
//     that gained a field fails validation until its schema says what the
//     field is. That is deliberate for an audit trail, whose records must
//     never carry plaintext, key material or PINs: a new field is a
//     reviewed change. Pin the schemas of the server release you talk to.
//   - The envelope requires id, source, type, time, datacontenttype, data,
//     tenant and outcome (success, failure or denied), and allows subject,
//     principal, requestid and errorcode. errorcode is present exactly when
//     the outcome is not success. cloudevent.json also dispatches on type:
//     for every event type that has a schema file, it checks data against
//     events/<type>.json, so one validation against cloudevent.json checks a
//     whole event. (It lets an unknown type through with any data object;
//     ValidateEvent refuses it.)
//   - An event type carries its version (.v1); a change that is not
//     backward compatible gets a new type and a new file.
//   - Schemas state the shape; the server checks more (for example, the
//     limits of an encryption context in bytes). A document that fails its
//     schema is certainly refused; one that passes may still be.
//
// # Validating with any JSON Schema tool
//
// Any draft 2020-12 validator works. Register every file under its $id
// (most tools call this adding a schema or a resource to a registry), then
// validate against the one you want: events/cloudevent.json for an audit
// event, api/<Message>.json for a request or reply. Nothing needs to be
// fetched over the network. With Python's jsonschema and referencing
// packages, for example:
//
//	import json, pathlib
//	from jsonschema import Draft202012Validator
//	from referencing import Registry, Resource
//
//	docs = [json.loads(p.read_text()) for p in pathlib.Path("schemas").rglob("*.json")]
//	registry = Registry().with_resources((d["$id"], Resource.from_contents(d)) for d in docs)
//	envelope = registry.contents("https://keyflow.io/schemas/events/cloudevent.json")
//	validator = Draft202012Validator(envelope, registry=registry,
//	                                 format_checker=Draft202012Validator.FORMAT_CHECKER)
//	for error in validator.iter_errors(json.loads(event_bytes)):
//	    print(error.message)
//
// With ajv (JavaScript), call ajv.addSchema for every file, then
// ajv.getSchema("https://keyflow.io/schemas/events/cloudevent.json").
//
// To check events as they arrive, read them with `keyflow audit tail
// --follow`, which prints one event per line (or from the KF_AUDIT stream:
// each message body is one event), and validate each. Turn on format assertions (date-time,
// uri-reference) if your tool makes them optional, as draft 2020-12 does;
// the schemas do not depend on them for anything security-relevant.
//
// # Validating from Go
//
// [ValidateEvent] checks one stored event (envelope, then data) and refuses
// a type that has no schema with an error wrapping [ErrUnknownType].
// [ValidateAPI] checks a request or reply body by message name. Both wrap
// [ErrInvalid] when the document does not match; the rest of the error
// says where. The schemas are compiled once, on first use, with format and
// content assertions on.
//
// This package imports only the standard library and the validator, so any
// keyflow package (kms included) may depend on it.
package schemas

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// FS holds the schema files: defs.json, api/*.json, events/*.json and
// policy/*.json.
//
//go:embed defs.json api/*.json events/*.json policy/*.json
var FS embed.FS

// BaseURI is the prefix of every schema's $id; a file's $id is BaseURI
// followed by its path in [FS].
const BaseURI = "https://keyflow.io/schemas/"

// EnvelopeFile is the path in [FS] of the audit event envelope schema.
const EnvelopeFile = "events/cloudevent.json"

// Errors. Validation failures wrap ErrInvalid together with the validator's
// detailed error.
var (
	// ErrInvalid means that a document does not match its schema.
	ErrInvalid = errors.New("schemas: document does not match its schema")
	// ErrUnknownType means that an event's type has no schema.
	ErrUnknownType = errors.New("schemas: unknown event type")
	// ErrUnknownMessage means that ValidateAPI was given a name with no
	// schema.
	ErrUnknownMessage = errors.New("schemas: unknown API message")
)

type registry struct {
	envelope *jsonschema.Schema
	events   map[string]*jsonschema.Schema // event type -> data schema
	api      map[string]*jsonschema.Schema // Go type name -> schema
	policy   map[string]*jsonschema.Schema // document name -> schema
}

var (
	loadOnce sync.Once
	loaded   *registry
	loadErr  error
)

// Compile compiles every embedded schema (once per process) and reports
// whether one of them is broken. The Validate functions call it; a program
// may call it at start-up to fail early.
func Compile() error {
	_, err := load()
	return err
}

func load() (*registry, error) {
	loadOnce.Do(func() { loaded, loadErr = compileAll() })
	return loaded, loadErr
}

func compileAll() (*registry, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.AssertContent()
	// Refuse to fetch anything: every reference must be to an embedded file.
	c.UseLoader(noLoader{})
	var files []string
	err := fs.WalkDir(FS, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || path.Ext(p) != ".json" {
			return nil
		}
		raw, err := FS.ReadFile(p)
		if err != nil {
			return err
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			return fmt.Errorf("failed to parse schema %s: %w", p, err)
		}
		obj, ok := doc.(map[string]any)
		if !ok || obj["$id"] != BaseURI+p {
			return fmt.Errorf("schema %s: $id must be %q", p, BaseURI+p)
		}
		if err := c.AddResource(BaseURI+p, doc); err != nil {
			return fmt.Errorf("failed to add schema %s: %w", p, err)
		}
		files = append(files, p)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("failed to load schemas: %w", err)
	}
	r := &registry{events: map[string]*jsonschema.Schema{}, api: map[string]*jsonschema.Schema{}, policy: map[string]*jsonschema.Schema{}}
	for _, p := range files {
		sch, err := c.Compile(BaseURI + p)
		if err != nil {
			return nil, fmt.Errorf("failed to compile schema %s: %w", p, err)
		}
		dir, name := path.Split(p)
		name = strings.TrimSuffix(name, ".json")
		switch {
		case p == EnvelopeFile:
			r.envelope = sch
		case dir == "events/":
			r.events[name] = sch
		case dir == "api/":
			r.api[name] = sch
		case dir == "policy/":
			r.policy[name] = sch
		}
	}
	if r.envelope == nil {
		return nil, fmt.Errorf("failed to load schemas: %s is missing", EnvelopeFile)
	}
	return r, nil
}

type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("schemas: %s is not an embedded schema", url)
}

// EventTypes returns the event types that have a schema, sorted.
func EventTypes() []string {
	r, err := load()
	if err != nil {
		return nil
	}
	return sortedKeys(r.events)
}

// APIMessages returns the names of the API messages that have a schema
// (the Go type names in client/api), sorted.
func APIMessages() []string {
	r, err := load()
	if err != nil {
		return nil
	}
	return sortedKeys(r.api)
}

func sortedKeys(m map[string]*jsonschema.Schema) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// ValidateEvent checks one audit event in structured JSON form (a message
// body of the audit stream, or an element of AuditTailReply): first the
// envelope, then its data against the schema of its type. A type without a
// schema is an error wrapping [ErrUnknownType].
func ValidateEvent(raw []byte) error {
	r, err := load()
	if err != nil {
		return err
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("%w: event is not JSON: %w", ErrInvalid, err)
	}
	if err := r.envelope.Validate(doc); err != nil {
		return fmt.Errorf("%w: event envelope: %w", ErrInvalid, err)
	}
	obj := doc.(map[string]any) // the envelope schema requires an object
	typ, _ := obj["type"].(string)
	sch, ok := r.events[typ]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownType, typ)
	}
	if err := sch.Validate(obj["data"]); err != nil {
		return fmt.Errorf("%w: data of %s: %w", ErrInvalid, typ, err)
	}
	return nil
}

// ValidateEventData checks the data object of one event type.
func ValidateEventData(eventType string, data []byte) error {
	r, err := load()
	if err != nil {
		return err
	}
	sch, ok := r.events[eventType]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownType, eventType)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("%w: data of %s is not JSON: %w", ErrInvalid, eventType, err)
	}
	if err := sch.Validate(doc); err != nil {
		return fmt.Errorf("%w: data of %s: %w", ErrInvalid, eventType, err)
	}
	return nil
}

// ValidateAPI checks a request or reply body of the NATS API. name is the
// message's Go type name in client/api, e.g. "EncryptRequest" (see
// [APIMessages]).
func ValidateAPI(name string, raw []byte) error {
	r, err := load()
	if err != nil {
		return err
	}
	sch, ok := r.api[name]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownMessage, name)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("%w: %s is not JSON: %w", ErrInvalid, name, err)
	}
	if err := sch.Validate(doc); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrInvalid, name, err)
	}
	return nil
}

// PolicyDocuments returns the names of the policy documents that have a
// schema (policy/<name>.json), sorted.
func PolicyDocuments() []string {
	r, err := load()
	if err != nil {
		return nil
	}
	return sortedKeys(r.policy)
}

// ValidatePolicy checks a policy document, e.g. a key policy, by name
// ("KeyPolicy").
func ValidatePolicy(name string, raw []byte) error {
	r, err := load()
	if err != nil {
		return err
	}
	sch, ok := r.policy[name]
	if !ok {
		return fmt.Errorf("%w: policy %q", ErrUnknownMessage, name)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("%w: %s is not JSON: %w", ErrInvalid, name, err)
	}
	if err := sch.Validate(doc); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrInvalid, name, err)
	}
	return nil
}

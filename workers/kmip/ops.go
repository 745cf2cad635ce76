package kmip

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/kmip/ttlv"
)

// handler is one KMIP operation: its row in kms's operation table and its
// function, a decode, the domain calls and an encode.
type handler struct {
	name string
	fn   func(s *Server, ctx context.Context, cl call, p *ttlv.Item) (ttlv.Item, error)
}

var handlers map[uint32]handler

func init() {
	handlers = map[uint32]handler{
		opDiscoverVersions: {"kmip.discoverversions", (*Server).discoverVersions},
		opQuery:            {"kmip.query", (*Server).query},
		opCreate:           {"kmip.create", (*Server).create},
		opRegister:         {"kmip.register", (*Server).register},
		opGet:              {"kmip.get", (*Server).get},
		opGetAttributes:    {"kmip.getattributes", (*Server).getAttributes},
		opGetAttributeList: {"kmip.getattributelist", (*Server).getAttributeList},
		opAddAttribute:     {"kmip.addattribute", (*Server).changeAttribute},
		opModifyAttribute:  {"kmip.modifyattribute", (*Server).changeAttribute},
		opDeleteAttribute:  {"kmip.deleteattribute", (*Server).changeAttribute},
		opLocate:           {"kmip.locate", (*Server).locate},
		opActivate:         {"kmip.activate", (*Server).activate},
		opRevoke:           {"kmip.revoke", (*Server).revoke},
		opDestroy:          {"kmip.destroy", (*Server).destroy},
		opEncrypt:          {"kmip.encrypt", (*Server).encrypt},
		opDecrypt:          {"kmip.decrypt", (*Server).decrypt},
		opMAC:              {"kmip.mac", (*Server).mac},
		opCreateKeyPair:    {"kmip.createkeypair", (*Server).createKeyPair},
		opSign:             {"kmip.sign", (*Server).sign},
		opSignatureVerify:  {"kmip.signatureverify", (*Server).signatureVerify},
		opRekey:            {"kmip.rekey", (*Server).rekey},
	}
}

// Operations lists the kms operation-table rows the server uses.
func Operations() []string {
	out := []string{"kmip.exportable"}
	for _, h := range handlers {
		out = append(out, h.name)
	}
	return out
}

func payload(items ...ttlv.Item) ttlv.Item { return ttlv.Struct(tagResponsePayload, items...) }

func missing(what string) error { return &opError{reasonMissingData, what + " is missing"} }

func invalid(format string, a ...any) error {
	return &opError{reasonInvalidField, fmt.Sprintf(format, a...)}
}

// uid reads the Unique Identifier: a keyflow key ID, or for the public
// half of a key pair the key ID with publicSuffix. It returns the key ID.
func uid(p *ttlv.Item) (string, error) {
	id, _, err := uidView(p)
	return id, err
}

// uidView is uid that also says whether the public key was named.
func uidView(p *ttlv.Item) (string, bool, error) {
	id, ok := p.TextOf(tagUniqueIdentifier)
	if !ok || id == "" {
		return "", false, missing("Unique Identifier")
	}
	if keyID, ok := strings.CutSuffix(id, publicSuffix); ok {
		return keyID, true, nil
	}
	return id, false, nil
}

// --- Discover Versions, Query ------------------------------------------

func (s *Server) discoverVersions(ctx context.Context, cl call, p *ttlv.Item) (ttlv.Item, error) {
	if err := s.authorize(ctx, cl, cl.op); err != nil {
		return ttlv.Item{}, err
	}
	var want []version
	for _, pv := range p.All(tagProtocolVersion) {
		ma, _ := pv.IntOf(tagProtocolVersionMajor)
		mi, _ := pv.IntOf(tagProtocolVersionMinor)
		want = append(want, version{ma, mi})
	}
	out := payload()
	for _, v := range supported {
		if len(want) > 0 && !containsVersion(want, v) {
			continue
		}
		out.Items = append(out.Items, ttlv.Struct(tagProtocolVersion, ttlv.Int(tagProtocolVersionMajor, v.major), ttlv.Int(tagProtocolVersionMinor, v.minor)))
	}
	return out, nil
}

func containsVersion(vs []version, v version) bool {
	for _, x := range vs {
		if x == v {
			return true
		}
	}
	return false
}

func (s *Server) query(ctx context.Context, cl call, p *ttlv.Item) (ttlv.Item, error) {
	if err := s.authorize(ctx, cl, cl.op); err != nil {
		return ttlv.Item{}, err
	}
	out := payload()
	for _, f := range p.All(tagQueryFunction) {
		switch uint32(f.Int) {
		case queryOperations:
			for _, op := range []uint32{opCreate, opRegister, opLocate, opGet, opGetAttributes, opGetAttributeList, opAddAttribute,
				opModifyAttribute, opDeleteAttribute, opActivate, opRevoke, opDestroy, opQuery, opDiscoverVersions, opEncrypt, opDecrypt, opMAC,
				opCreateKeyPair, opSign, opSignatureVerify, opRekey} {
				out.Items = append(out.Items, ttlv.Enum(tagOperation, op))
			}
		case queryObjects:
			for _, ot := range []uint32{objSymmetricKey, objSecretData, objPrivateKey, objPublicKey} {
				out.Items = append(out.Items, ttlv.Enum(tagObjectType, ot))
			}
		case queryServerInformation:
			out.Items = append(out.Items, ttlv.Text(tagVendorIdentification, "keyflow"))
		}
	}
	return out, nil
}

// --- Create, Register ----------------------------------------------------

// template is what a Create or Register template says.
type template struct {
	alg, length, mask int64
	hasAlg, hasLen    bool
	curve             uint32
	activation        time.Time
	exportable        bool
	attrs             []kms.Attribute
}

func parseTemplate(p *ttlv.Item) (*template, error) {
	t := &template{}
	var attrs []*ttlv.Item
	for _, tag := range []ttlv.Tag{tagTemplateAttribute, tagCommonTemplateAttribute, tagPrivateKeyTemplateAttribute, tagPublicKeyTemplateAttribute} {
		for _, ta := range p.All(tag) {
			attrs = append(attrs, ta.All(tagAttribute)...)
		}
	}
	for _, a := range attrs {
		name, _ := a.TextOf(tagAttributeName)
		v := a.Find(tagAttributeValue)
		if name == "" || v == nil {
			return nil, invalid("an attribute needs a name and a value")
		}
		if err := t.set(name, v); err != nil {
			return nil, err
		}
	}
	return t, nil
}

func (t *template) set(name string, v *ttlv.Item) error {
	switch name {
	case "Cryptographic Algorithm":
		t.alg, t.hasAlg = v.Int, true
	case "Cryptographic Length":
		t.length, t.hasLen = v.Int, true
	case "Cryptographic Usage Mask":
		t.mask |= v.Int
	case "Cryptographic Domain Parameters":
		if c, ok := v.EnumOf(tagRecommendedCurve); ok {
			t.curve = c
		}
	case "Activation Date":
		t.activation = time.Unix(v.Int, 0)
	case "Operation Policy Name":
		pol := string(v.Bytes)
		t.exportable = t.exportable || pol == ExportablePolicy
		t.attrs = append(t.attrs, kms.Attribute{Name: name, Value: pol})
	case "Name":
		nv, ok := v.TextOf(tagNameValue)
		if !ok || nv == "" {
			return invalid("a Name attribute needs a Name Value")
		}
		t.attrs = append(t.attrs, kms.Attribute{Name: "Name", Value: nv})
	default:
		if name == ExportableAttribute {
			t.exportable = (v.Type == ttlv.TypeBoolean && v.Int == 1) || (v.Type == ttlv.TypeTextString && string(v.Bytes) == "true")
		}
		if v.Type == ttlv.TypeTextString {
			t.attrs = append(t.attrs, kms.Attribute{Name: name, Value: string(v.Bytes)})
		}
		// Other standard attributes (Object Group, Contact
		// Information, ...) as text are kept; the rest are server-set
		// or unsupported and ignored, as KMIP allows for Create.
	}
	return nil
}

// spec maps an algorithm and length to a keyflow key spec and usage.
func (t *template) spec() (kms.KeySpec, kms.KeyUsage, error) {
	if t.hasLen && t.length != 256 {
		return "", "", invalid("keyflow keys are 256 bits, not %d", t.length)
	}
	switch {
	case !t.hasAlg || t.alg == int64(algAES):
		return kms.SpecSymmetricDefault, kms.UsageEncryptDecrypt, nil
	case t.alg == int64(algHMACSHA256):
		return kms.SpecHMAC256, kms.UsageGenerateVerifyMAC, nil
	default:
		return "", "", &opError{reasonFeatureNotSupported, fmt.Sprintf("cryptographic algorithm 0x%02x is not one keyflow creates over KMIP (AES, HMAC-SHA256)", t.alg)}
	}
}

func (s *Server) createParams(ctx context.Context, cl call, t *template) (kms.CreateKeyParams, error) {
	spec, usage, err := t.spec()
	if err != nil {
		return kms.CreateKeyParams{}, err
	}
	if t.exportable {
		if err := s.authorize(ctx, cl, "kmip.exportable"); err != nil {
			return kms.CreateKeyParams{}, err
		}
	}
	return kms.CreateKeyParams{Spec: spec, Usage: usage, ActivationDate: t.activation, Exportable: t.exportable, Attributes: t.attrs}, nil
}

func (s *Server) create(ctx context.Context, cl call, p *ttlv.Item) (ttlv.Item, error) {
	if ot, _ := p.EnumOf(tagObjectType); ot != objSymmetricKey {
		return ttlv.Item{}, &opError{reasonInvalidField, "keyflow creates Symmetric Key objects only over Create"}
	}
	if err := s.authorize(ctx, cl, cl.op); err != nil {
		return ttlv.Item{}, err
	}
	t, err := parseTemplate(p)
	if err != nil {
		return ttlv.Item{}, err
	}
	cp, err := s.createParams(ctx, cl, t)
	if err != nil {
		return ttlv.Item{}, err
	}
	k, err := s.o.KMS.CreateKey(ctx, cl.c, cp)
	if err != nil {
		return ttlv.Item{}, err
	}
	return payload(ttlv.Enum(tagObjectType, objSymmetricKey), ttlv.Text(tagUniqueIdentifier, k.ID)), nil
}

// objectTypeAttr records a Secret Data object, which keyflow keeps as a
// 32-byte HMAC_256 key.
const objectTypeAttr = "keyflow-kmip-object-type"

func (s *Server) register(ctx context.Context, cl call, p *ttlv.Item) (ttlv.Item, error) {
	ot, _ := p.EnumOf(tagObjectType)
	if err := s.authorize(ctx, cl, cl.op); err != nil {
		return ttlv.Item{}, err
	}
	t, err := parseTemplate(p)
	if err != nil {
		return ttlv.Item{}, err
	}
	var block *ttlv.Item
	switch ot {
	case objSymmetricKey:
		block = p.Find(tagSymmetricKey).Find(tagKeyBlock)
	case objSecretData:
		block = p.Find(tagSecretData).Find(tagKeyBlock)
		t.alg, t.hasAlg = int64(algHMACSHA256), true
		t.attrs = append(t.attrs, kms.Attribute{Name: objectTypeAttr, Value: "SecretData"})
	default:
		return ttlv.Item{}, &opError{reasonFeatureNotSupported, "keyflow registers Symmetric Key and Secret Data objects only"}
	}
	if block == nil {
		return ttlv.Item{}, missing("the object's Key Block")
	}
	if ot == objSymmetricKey {
		if a, ok := block.EnumOf(tagCryptographicAlgorithm); ok {
			t.alg, t.hasAlg = int64(a), true
		}
		if l, ok := block.IntOf(tagCryptographicLength); ok {
			t.length, t.hasLen = int64(l), true
		}
	}
	material, err := keyMaterial(block)
	if err != nil {
		return ttlv.Item{}, err
	}
	cp, err := s.createParams(ctx, cl, t)
	if err != nil {
		return ttlv.Item{}, err
	}
	k, err := s.o.KMS.RegisterKey(ctx, cl.c, kms.RegisterKeyParams{CreateKeyParams: cp, Material: material})
	clear(material)
	if err != nil {
		return ttlv.Item{}, err
	}
	return payload(ttlv.Text(tagUniqueIdentifier, k.ID)), nil
}

// keyMaterial reads Raw, Opaque or Transparent Symmetric Key material.
func keyMaterial(block *ttlv.Item) ([]byte, error) {
	f, _ := block.EnumOf(tagKeyFormatType)
	kv := block.Find(tagKeyValue)
	km := kv.Find(tagKeyMaterial)
	if km == nil {
		return nil, missing("Key Material")
	}
	switch {
	case km.Type == ttlv.TypeByteString && (f == fmtRaw || f == 0x02):
		return append([]byte(nil), km.Bytes...), nil
	case km.Type == ttlv.TypeStructure && f == fmtTransparentSymmetricKey:
		if b, ok := km.BytesOf(0x42003F); ok { // Key
			return append([]byte(nil), b...), nil
		}
	}
	return nil, &opError{reasonKeyFormatNotSupported, "keyflow takes Raw, Opaque or Transparent Symmetric Key material"}
}

// --- Get -----------------------------------------------------------------

func (s *Server) get(ctx context.Context, cl call, p *ttlv.Item) (ttlv.Item, error) {
	id, public, err := uidView(p)
	if err != nil {
		return ttlv.Item{}, err
	}
	f, hasFormat := p.EnumOf(tagKeyFormatType)
	if public {
		if hasFormat && f != fmtX509 {
			return ttlv.Item{}, &opError{reasonKeyFormatNotSupported, "keyflow returns public keys as X.509 SubjectPublicKeyInfo"}
		}
		if err := s.authorize(ctx, cl, cl.op, id); err != nil {
			return ttlv.Item{}, err
		}
		return s.getPublic(ctx, cl, id)
	}
	if hasFormat && f != fmtRaw && f != fmtTransparentSymmetricKey {
		return ttlv.Item{}, &opError{reasonKeyFormatNotSupported, "keyflow returns Raw or Transparent Symmetric Key material"}
	}
	if err := s.authorize(ctx, cl, cl.op, id); err != nil {
		return ttlv.Item{}, err
	}
	res, err := s.o.KMS.ExportKey(ctx, cl.c, id)
	if err != nil {
		return ttlv.Item{}, err
	}
	alg := algAES
	if res.Spec == kms.SpecHMAC256 {
		alg = algHMACSHA256
	}
	block := ttlv.Struct(tagKeyBlock,
		ttlv.Enum(tagKeyFormatType, fmtRaw),
		ttlv.Struct(tagKeyValue, ttlv.Bytes(tagKeyMaterial, res.Material)),
		ttlv.Enum(tagCryptographicAlgorithm, alg),
		ttlv.Int(tagCryptographicLength, int32(len(res.Material)*8)))
	k, _ := s.o.KMS.GetKey(ctx, cl.c, res.KeyID)
	if k != nil && attrValue(k, objectTypeAttr) == "SecretData" {
		block.Items = block.Items[:2]                      // secret data: no algorithm or length
		block.Items[0] = ttlv.Enum(tagKeyFormatType, 0x02) // Opaque
		return payload(ttlv.Enum(tagObjectType, objSecretData), ttlv.Text(tagUniqueIdentifier, res.KeyID),
			ttlv.Struct(tagSecretData, ttlv.Enum(tagSecretDataType, 1), block)), nil
	}
	return payload(ttlv.Enum(tagObjectType, objSymmetricKey), ttlv.Text(tagUniqueIdentifier, res.KeyID), ttlv.Struct(tagSymmetricKey, block)), nil
}

func attrValue(k *kms.Key, name string) string {
	for _, a := range k.Attributes {
		if a.Name == name {
			return a.Value
		}
	}
	return ""
}

// --- Attributes ------------------------------------------------------------

// stateOf maps keyflow's SP 800-57 states onto KMIP's, one to one;
// keyflow's SUSPENDED (a reversible disable) shows as Deactivated. A
// compromised primary version makes the object Compromised.
func stateOf(k *kms.Key) uint32 {
	if v, ok := k.Version(k.PrimaryVersion); ok && v.State == kms.StateCompromised && k.State != kms.StateDestroyed {
		return stCompromised
	}
	switch k.State {
	case kms.StatePreActive:
		return stPreActive
	case kms.StateActive:
		return stActive
	case kms.StateCompromised:
		return stCompromised
	case kms.StateDestroyed:
		return stDestroyed
	case kms.StateDestroyedCompromised:
		return stDestroyedCompromised
	default:
		return stDeactivated
	}
}

// objectType is the KMIP object a key is seen as: a Symmetric Key or
// Secret Data, or the Private or Public Key of a key pair (public).
func objectType(k *kms.Key, public bool) uint32 {
	switch {
	case attrValue(k, objectTypeAttr) == "SecretData":
		return objSecretData
	case isPair(k) && public:
		return objPublicKey
	case isPair(k):
		return objPrivateKey
	}
	return objSymmetricKey
}

// views are the KMIP objects of a key: the key, and for a key pair also
// its public key.
func views(k *kms.Key) []bool {
	if isPair(k) {
		return []bool{false, true}
	}
	return []bool{false}
}

func objectID(k *kms.Key, public bool) string {
	if public {
		return k.ID + publicSuffix
	}
	return k.ID
}

func attr(name string, v ttlv.Item) ttlv.Item {
	v.Tag = tagAttributeValue
	return ttlv.Struct(tagAttribute, ttlv.Text(tagAttributeName, name), v)
}

// attributes lists the KMIP attributes of a key, or of its public key.
func attributes(k *kms.Key, public bool) []ttlv.Item {
	out := []ttlv.Item{
		attr("Unique Identifier", ttlv.Text(0, objectID(k, public))),
		attr("Object Type", ttlv.Enum(0, objectType(k, public))),
		attr("State", ttlv.Enum(0, stateOf(k))),
		attr("Initial Date", ttlv.DateTime(0, k.CreatedAt)),
	}
	switch objectType(k, public) {
	case objSymmetricKey:
		alg, mask := algAES, usageEncrypt|usageDecrypt
		if k.Spec == kms.SpecHMAC256 {
			alg, mask = algHMACSHA256, usageMACGenerate|usageMACVerify
		}
		out = append(out, attr("Cryptographic Algorithm", ttlv.Enum(0, alg)), attr("Cryptographic Length", ttlv.Int(0, 256)),
			attr("Cryptographic Usage Mask", ttlv.Int(0, mask)))
	case objPrivateKey, objPublicKey:
		alg, length, mask := pairAttributes(k, public)
		out = append(out, attr("Cryptographic Algorithm", ttlv.Enum(0, alg)), attr("Cryptographic Length", ttlv.Int(0, length)),
			attr("Cryptographic Usage Mask", ttlv.Int(0, mask)))
		link := objectID(k, !public)
		linkType := uint32(0x101) // Private Key Link, from the public key
		if !public {
			linkType = 0x102 // Public Key Link
		}
		out = append(out, attr("Link", ttlv.Struct(0, ttlv.Enum(tagLinkType, linkType), ttlv.Text(tagLinkedObjectIdentifier, link))))
	}
	if k.State != kms.StatePreActive {
		out = append(out, attr("Activation Date", ttlv.DateTime(0, k.CreatedAt)))
	}
	if !k.Lifecycle.StateChangedAt.IsZero() {
		out = append(out, attr("Last Change Date", ttlv.DateTime(0, k.Lifecycle.StateChangedAt)))
	}
	if k.Lifecycle.PendingDeletion {
		out = append(out, attr("Destroy Date", ttlv.DateTime(0, k.Lifecycle.DeletionDate)))
	}
	if k.Exportable {
		out = append(out, attr(ExportableAttribute, ttlv.Text(0, "true")))
	}
	for _, a := range k.Attributes {
		switch {
		case a.Name == objectTypeAttr:
		case a.Name == "Name":
			out = append(out, attr("Name", ttlv.Struct(0, ttlv.Text(tagNameValue, a.Value), ttlv.Enum(tagNameType, nameTypeText))))
		default:
			out = append(out, attr(a.Name, ttlv.Text(0, a.Value)))
		}
	}
	return out
}

func (s *Server) describe(ctx context.Context, cl call, id string) (*kms.Key, error) {
	if err := s.authorize(ctx, cl, cl.op, id); err != nil {
		return nil, err
	}
	return s.o.KMS.DescribeKey(ctx, cl.c, id)
}

func (s *Server) getAttributes(ctx context.Context, cl call, p *ttlv.Item) (ttlv.Item, error) {
	id, public, err := uidView(p)
	if err != nil {
		return ttlv.Item{}, err
	}
	k, err := s.describe(ctx, cl, id)
	if err != nil {
		return ttlv.Item{}, err
	}
	want := map[string]bool{}
	for _, n := range p.All(tagAttributeName) {
		want[string(n.Bytes)] = true
	}
	out := payload(ttlv.Text(tagUniqueIdentifier, objectID(k, public)))
	for _, a := range attributes(k, public) {
		if n, _ := a.TextOf(tagAttributeName); len(want) == 0 || want[n] {
			out.Items = append(out.Items, a)
		}
	}
	return out, nil
}

func (s *Server) getAttributeList(ctx context.Context, cl call, p *ttlv.Item) (ttlv.Item, error) {
	id, public, err := uidView(p)
	if err != nil {
		return ttlv.Item{}, err
	}
	k, err := s.describe(ctx, cl, id)
	if err != nil {
		return ttlv.Item{}, err
	}
	out := payload(ttlv.Text(tagUniqueIdentifier, objectID(k, public)))
	seen := map[string]bool{}
	for _, a := range attributes(k, public) {
		n, _ := a.TextOf(tagAttributeName)
		if !seen[n] {
			seen[n] = true
			out.Items = append(out.Items, ttlv.Text(tagAttributeName, n))
		}
	}
	return out, nil
}

// clientSettable are the attributes a client may add, modify or delete:
// Name, and custom attributes (x-...), as KMIP 1.x allows.
func clientSettable(name string) bool {
	return name == "Name" || (strings.HasPrefix(name, "x-") && name != ExportableAttribute)
}

func (s *Server) changeAttribute(ctx context.Context, cl call, p *ttlv.Item) (ttlv.Item, error) {
	id, err := uid(p)
	if err != nil {
		return ttlv.Item{}, err
	}
	var name, value string
	index := int32(0)
	a := p.Find(tagAttribute)
	if a != nil {
		name, _ = a.TextOf(tagAttributeName)
		index, _ = a.IntOf(tagAttributeIndex)
		if v := a.Find(tagAttributeValue); v != nil && clientSettable(name) {
			value = string(v.Bytes)
			if name == "Name" {
				value, _ = v.TextOf(tagNameValue)
			} else if v.Type != ttlv.TypeTextString {
				return ttlv.Item{}, invalid("keyflow keeps text-valued custom attributes only")
			}
		}
	} else if n, ok := p.TextOf(tagAttributeName); ok { // Delete Attribute
		name = n
		index, _ = p.IntOf(tagAttributeIndex)
	}
	if name == "" {
		return ttlv.Item{}, missing("the Attribute")
	}
	if !clientSettable(name) {
		return ttlv.Item{}, &opError{reasonPermissionDenied, fmt.Sprintf("attribute %q is set by the server; clients may change Name and x- attributes", truncate(name))}
	}
	if err := s.authorize(ctx, cl, cl.op, id); err != nil {
		return ttlv.Item{}, err
	}
	opName := map[string]string{"kmip.addattribute": "AddAttribute", "kmip.modifyattribute": "ModifyAttribute", "kmip.deleteattribute": "DeleteAttribute"}[cl.op]
	if a == nil && opName != "DeleteAttribute" {
		return ttlv.Item{}, missing("the Attribute")
	}
	k, err := s.o.KMS.SetAttributes(ctx, cl.c, id, opName, name, func(cur []kms.Attribute) ([]kms.Attribute, error) {
		return editAttributes(cur, opName, name, value, int(index))
	})
	if err != nil {
		return ttlv.Item{}, err
	}
	out := payload(ttlv.Text(tagUniqueIdentifier, k.ID))
	if opName != "DeleteAttribute" {
		out.Items = append(out.Items, p.Find(tagAttribute).Clone())
	}
	return out, nil
}

// editAttributes applies one Add, Modify or Delete to the attribute list;
// index counts the instances of name.
func editAttributes(cur []kms.Attribute, op, name, value string, index int) ([]kms.Attribute, error) {
	var at []int
	for i, a := range cur {
		if a.Name == name {
			at = append(at, i)
		}
	}
	switch op {
	case "AddAttribute":
		if len(at) > 0 && name != "Name" {
			return nil, &kms.Error{Code: kms.CodeAlreadyExists, Message: fmt.Sprintf("attribute %s already exists; modify it", name)}
		}
		return append(cur, kms.Attribute{Name: name, Value: value}), nil
	case "ModifyAttribute":
		if index >= len(at) {
			return nil, &kms.Error{Code: kms.CodeNotFound, Message: fmt.Sprintf("attribute %s index %d does not exist", name, index)}
		}
		cur[at[index]].Value = value
		return cur, nil
	default:
		if index >= len(at) {
			return nil, &kms.Error{Code: kms.CodeNotFound, Message: fmt.Sprintf("attribute %s index %d does not exist", name, index)}
		}
		return append(cur[:at[index]], cur[at[index]+1:]...), nil
	}
}

// --- Locate --------------------------------------------------------------

func (s *Server) locate(ctx context.Context, cl call, p *ttlv.Item) (ttlv.Item, error) {
	if err := s.authorize(ctx, cl, cl.op); err != nil {
		return ttlv.Item{}, err
	}
	maxItems, hasMax := p.IntOf(tagMaximumItems)
	offset, _ := p.IntOf(tagOffsetItems)
	if maxItems < 0 || offset < 0 {
		return ttlv.Item{}, invalid("Maximum Items and Offset Items are not negative")
	}
	want := p.All(tagAttribute)
	keys, err := s.o.KMS.ListKeys(ctx, cl.c)
	if err != nil {
		return ttlv.Item{}, err
	}
	var ids []string
	for _, k := range keys {
		for _, public := range views(k) {
			if matches(k, public, want) {
				ids = append(ids, objectID(k, public))
			}
		}
	}
	located := len(ids)
	ids = ids[min(int(offset), len(ids)):]
	if hasMax && maxItems > 0 && int(maxItems) < len(ids) {
		ids = ids[:maxItems]
	}
	out := payload()
	if cl.v.minor >= 3 {
		out.Items = append(out.Items, ttlv.Int(tagLocatedItems, int32(located)))
	}
	for _, id := range ids {
		out.Items = append(out.Items, ttlv.Text(tagUniqueIdentifier, id))
	}
	return out, nil
}

// matches reports whether k has every attribute of the Locate request.
func matches(k *kms.Key, public bool, want []*ttlv.Item) bool {
	have := attributes(k, public)
	for _, w := range want {
		name, _ := w.TextOf(tagAttributeName)
		wv := w.Find(tagAttributeValue)
		if wv == nil {
			return false
		}
		found := false
		for i := range have {
			if n, _ := have[i].TextOf(tagAttributeName); n == name && sameValue(have[i].Find(tagAttributeValue), wv) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func sameValue(a, b *ttlv.Item) bool {
	if a == nil || b == nil || a.Type != b.Type {
		return false
	}
	if a.Type == ttlv.TypeStructure { // Name: compare the Name Value
		x, _ := a.TextOf(tagNameValue)
		y, _ := b.TextOf(tagNameValue)
		return x == y
	}
	return a.Int == b.Int && string(a.Bytes) == string(b.Bytes)
}

// --- Activate, Revoke, Destroy ---------------------------------------------

func (s *Server) activate(ctx context.Context, cl call, p *ttlv.Item) (ttlv.Item, error) {
	id, err := uid(p)
	if err != nil {
		return ttlv.Item{}, err
	}
	if err := s.authorize(ctx, cl, cl.op, id); err != nil {
		return ttlv.Item{}, err
	}
	res, err := s.o.KMS.SetState(ctx, cl.c, kms.SetStateParams{KeyRef: id, To: kms.StateActive, Reason: "KMIP Activate"})
	if err != nil {
		return ttlv.Item{}, err
	}
	return payload(ttlv.Text(tagUniqueIdentifier, res.Key.ID)), nil
}

// revoke maps KMIP's revocation reasons onto keyflow transitions: Key
// Compromise and CA Compromise record a compromise of the primary version
// (which starts remediation); every other reason deactivates the key.
func (s *Server) revoke(ctx context.Context, cl call, p *ttlv.Item) (ttlv.Item, error) {
	id, err := uid(p)
	if err != nil {
		return ttlv.Item{}, err
	}
	rr := p.Find(tagRevocationReason)
	code, ok := rr.EnumOf(tagRevocationReasonCode)
	if !ok {
		return ttlv.Item{}, missing("Revocation Reason")
	}
	msg, _ := rr.TextOf(tagRevocationMessage)
	reason := fmt.Sprintf("KMIP Revoke (reason 0x%02x) %s", code, msg)
	if err := s.authorize(ctx, cl, cl.op, id); err != nil {
		return ttlv.Item{}, err
	}
	var res *kms.SetStateResult
	if code == revokeKeyCompromise || code == revokeCACompromise {
		res, err = s.o.KMS.Compromise(ctx, cl.c, kms.CompromiseParams{KeyRef: id, Reason: reason})
	} else {
		res, err = s.o.KMS.SetState(ctx, cl.c, kms.SetStateParams{KeyRef: id, To: kms.StateDeactivated, Reason: reason})
	}
	if err != nil {
		return ttlv.Item{}, err
	}
	return payload(ttlv.Text(tagUniqueIdentifier, res.Key.ID)), nil
}

// destroy schedules the key's destruction with the tenant's shortest
// deletion window; the deletion workflow destroys every copy of the
// material when it ends (keyflow never destroys material at once).
func (s *Server) destroy(ctx context.Context, cl call, p *ttlv.Item) (ttlv.Item, error) {
	id, err := uid(p)
	if err != nil {
		return ttlv.Item{}, err
	}
	if err := s.authorize(ctx, cl, cl.op, id); err != nil {
		return ttlv.Item{}, err
	}
	if s.o.Lifecycle == nil {
		return ttlv.Item{}, &opError{reasonGeneralFailure, "destruction needs the lifecycle workflows, which this server has not"}
	}
	window := kms.MinDeletionWindow
	if pol, err := s.o.KMS.TenantPolicyFor(ctx, cl.c.Tenant); err == nil && pol != nil && pol.MinDeletionWindowDays > 0 {
		window = time.Duration(pol.MinDeletionWindowDays) * kms.Day
	}
	sp := kms.ScheduleDeletionParams{KeyRef: id, Window: window}
	if s.o.KMS.NeedsApproval(ctx, cl.c, kms.ApprovalScheduleDeletion) {
		// Dual control, as on NATS: the approval workflow schedules the
		// deletion once approvers agree.
		target, err := s.o.KMS.PrepareScheduleDeletion(ctx, cl.c, sp)
		if err != nil {
			return ttlv.Item{}, err
		}
		if err := s.approvalGate(ctx, cl.c, kms.ApprovalScheduleDeletion, target); err != nil {
			return ttlv.Item{}, err
		}
	}
	k, err := s.o.KMS.ScheduleDeletion(ctx, cl.c, sp)
	if err != nil {
		return ttlv.Item{}, err
	}
	if _, err := s.o.Lifecycle.ScheduleDeletion(ctx, cl.c, k); err != nil {
		return ttlv.Item{}, &opError{reasonGeneralFailure, "the deletion is recorded but its workflow did not start; retry Destroy"}
	}
	return payload(ttlv.Text(tagUniqueIdentifier, k.ID)), nil
}

// --- Encrypt, Decrypt, MAC -------------------------------------------------

// cryptoInput reads the key, the data and the parameters of Encrypt,
// Decrypt and MAC. keyflow uses AES-256-GCM in its own ciphertext envelope
// (IV and tag inside), so a client-chosen IV or mode is refused.
func cryptoInput(p *ttlv.Item) (string, []byte, error) {
	id, err := uid(p)
	if err != nil {
		return "", nil, err
	}
	data, ok := p.BytesOf(tagData)
	if !ok {
		return "", nil, missing("Data")
	}
	if m, ok := p.Find(tagCryptographicParameters).EnumOf(tagBlockCipherMode); ok && m != modeGCM {
		return "", nil, &opError{reasonFeatureNotSupported, "keyflow encrypts with AES-256-GCM in its own envelope; leave out Block Cipher Mode or ask for GCM"}
	}
	if _, ok := p.BytesOf(tagIVCounterNonce); ok {
		return "", nil, &opError{reasonFeatureNotSupported, "keyflow draws its own IVs and keeps them in the ciphertext; leave out the IV"}
	}
	return id, data, nil
}

func (s *Server) encrypt(ctx context.Context, cl call, p *ttlv.Item) (ttlv.Item, error) {
	id, data, err := cryptoInput(p)
	if err != nil {
		return ttlv.Item{}, err
	}
	if err := s.authorize(ctx, cl, cl.op, id); err != nil {
		return ttlv.Item{}, err
	}
	res, err := s.o.KMS.Encrypt(ctx, cl.c, kms.EncryptParams{KeyRef: id, Plaintext: data})
	if err != nil {
		return ttlv.Item{}, err
	}
	return payload(ttlv.Text(tagUniqueIdentifier, res.KeyID), ttlv.Bytes(tagData, res.Ciphertext)), nil
}

func (s *Server) decrypt(ctx context.Context, cl call, p *ttlv.Item) (ttlv.Item, error) {
	id, data, err := cryptoInput(p)
	if err != nil {
		return ttlv.Item{}, err
	}
	if err := s.authorize(ctx, cl, cl.op, id); err != nil {
		return ttlv.Item{}, err
	}
	res, err := s.o.KMS.Decrypt(ctx, cl.c, kms.DecryptParams{KeyRef: id, Ciphertext: data})
	if err != nil {
		return ttlv.Item{}, err
	}
	return payload(ttlv.Text(tagUniqueIdentifier, res.KeyID), ttlv.Bytes(tagData, res.Plaintext)), nil
}

func (s *Server) mac(ctx context.Context, cl call, p *ttlv.Item) (ttlv.Item, error) {
	id, err := uid(p)
	if err != nil {
		return ttlv.Item{}, err
	}
	data, ok := p.BytesOf(tagData)
	if !ok {
		return ttlv.Item{}, missing("Data")
	}
	if a, ok := p.Find(tagCryptographicParameters).EnumOf(tagCryptographicAlgorithm); ok && a != algHMACSHA256 {
		return ttlv.Item{}, &opError{reasonFeatureNotSupported, "keyflow computes HMAC-SHA256 MACs"}
	}
	if err := s.authorize(ctx, cl, cl.op, id); err != nil {
		return ttlv.Item{}, err
	}
	res, err := s.o.KMS.GenerateMac(ctx, cl.c, kms.MACParams{KeyRef: id, Message: data, Algorithm: kms.MACHMACSHA256})
	if err != nil {
		return ttlv.Item{}, err
	}
	return payload(ttlv.Text(tagUniqueIdentifier, res.KeyID), ttlv.Bytes(tagMACData, res.MAC)), nil
}

// approvalGate asks for dual control where the tenant policy wants it: a
// pending approval is refused with its ID (the approval workflow runs the
// operation once approvers agree).
func (s *Server) approvalGate(ctx context.Context, c kms.Caller, kind kms.ApprovalKind, target string) error {
	id, pending, err := s.o.KMS.RequireApproval(ctx, c, kind, target)
	if err != nil {
		return err
	}
	if pending {
		return kms.PendingApprovalError(id)
	}
	return nil
}

// rekey rotates the key: a new version becomes primary, old ciphertexts
// still decrypt. keyflow keeps the key's ID across versions, so the
// Unique Identifier returned is the same (KMIP's Re-key makes a new
// object; see docs/kmip.md).
func (s *Server) rekey(ctx context.Context, cl call, p *ttlv.Item) (ttlv.Item, error) {
	id, err := uid(p)
	if err != nil {
		return ttlv.Item{}, err
	}
	if err := s.authorize(ctx, cl, cl.op, id); err != nil {
		return ttlv.Item{}, err
	}
	if s.o.Rotator == nil {
		return ttlv.Item{}, &opError{reasonGeneralFailure, "rotation needs the lifecycle workflows, which this server has not"}
	}
	keyID, err := s.o.KMS.RequestRotation(ctx, cl.c, id)
	if err != nil {
		return ttlv.Item{}, err
	}
	if s.o.KMS.NeedsApproval(ctx, cl.c, kms.ApprovalRotate) {
		if err := s.approvalGate(ctx, cl.c, kms.ApprovalRotate, keyID); err != nil {
			return ttlv.Item{}, err
		}
	}
	if _, err := s.o.Rotator(ctx, cl.c, keyID); err != nil {
		return ttlv.Item{}, s.o.KMS.RecordRotationFailed(ctx, cl.c, keyID, err)
	}
	return payload(ttlv.Text(tagUniqueIdentifier, keyID)), nil
}

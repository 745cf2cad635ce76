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
		opMACVerify:        {"kmip.macverify", (*Server).macVerify},
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

// authorizedKey reads the Unique Identifier and authorizes the operation
// on that key.
func (s *Server) authorizedKey(ctx context.Context, cl call, p *ttlv.Item) (string, error) {
	id, err := uid(p)
	if err != nil {
		return "", err
	}
	return id, s.authorize(ctx, cl, cl.op, id)
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
				opCreateKeyPair, opSign, opSignatureVerify, opRekey, opMACVerify} {
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
	t.exportable = t.exportable || cl.exportDefault
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
	s.keyChanged(ctx, cl.c, k)
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
	s.keyChanged(ctx, cl.c, k)
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

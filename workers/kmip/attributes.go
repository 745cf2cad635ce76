package kmip

import (
	"context"
	"fmt"
	"strings"

	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/kmip/ttlv"
)

// Get Attributes, Get Attribute List, Add/Modify/Delete Attribute and
// Locate: a key's KMIP attributes, derived from its keyflow metadata.

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

// describe reads the Unique Identifier, authorizes the operation on the
// key and describes it; public says the Public Key of a pair was named.
func (s *Server) describe(ctx context.Context, cl call, p *ttlv.Item) (k *kms.Key, public bool, err error) {
	id, public, err := uidView(p)
	if err != nil {
		return nil, false, err
	}
	if err := s.authorize(ctx, cl, cl.op, id); err != nil {
		return nil, false, err
	}
	k, err = s.o.KMS.DescribeKey(ctx, cl.c, id)
	return k, public, err
}

func (s *Server) getAttributes(ctx context.Context, cl call, p *ttlv.Item) (ttlv.Item, error) {
	k, public, err := s.describe(ctx, cl, p)
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
	k, public, err := s.describe(ctx, cl, p)
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
